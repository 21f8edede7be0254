"""JSON-schema answers: even a random model's output parses and validates."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.batch.conftest import SAFETY_SCHEMA, describe, make_images, model_args, read_jsonl
from vlmserve.batch.schema import StructuredOutput
from vlmserve.errors import VlmserveError
from vlmserve.grammar import bounded_schema
from vlmserve.templates import TemplateRegistry

pytestmark = pytest.mark.timeout(120)

FREE_TEXT_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "count": {"type": "integer"},
        "mood": {"enum": ["calm", "busy"]},
    },
    "required": ["label", "tags", "count", "mood"],
}


def run_schema(tiny_model, tmp_path, *flags: str, n: int = 8) -> list[dict]:
    folder = tmp_path / "in"
    make_images(folder, n)
    out = tmp_path / "r.jsonl"
    rc = describe(str(folder), "-o", str(out), "--parallel", "4", *flags,
                  *model_args(tiny_model))
    lines = read_jsonl(out)
    assert len(lines) == n
    return rc, lines


def test_schema_file_answers_parse_and_validate(tiny_model, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SAFETY_SCHEMA))
    rc, lines = run_schema(tiny_model, tmp_path, "--json-schema", str(schema_file),
                           "--max-tokens", "64", "--temperature", "1.0", "--seed", "3")
    assert rc == 0
    for line in lines:
        assert line["error"] is None, line
        jsonschema.validate(line["answer"], SAFETY_SCHEMA)
        assert json.loads(line["answer_text"]) == line["answer"]
        assert line["finish_reason"] == "stop"


def test_free_strings_and_arrays_are_bounded_so_answers_always_close(tiny_model, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(FREE_TEXT_SCHEMA))
    rc, lines = run_schema(tiny_model, tmp_path, "--json-schema", str(schema_file),
                           "--schema-max-string", "12", "--schema-max-items", "3",
                           "--max-tokens", "200", "--temperature", "1.5", "--seed", "1")
    assert rc == 0
    for line in lines:
        assert line["error"] is None, line
        jsonschema.validate(line["answer"], FREE_TEXT_SCHEMA)
        # (the label's length is not checked: the grammar counts a token's invalid UTF-8
        # bytes as one character, the detokenizer makes each byte a U+FFFD)
        assert len(line["answer"]["tags"]) <= 3


def test_the_safety_template_brings_its_own_schema(tiny_model, tmp_path):
    schema = TemplateRegistry.builtin().get("safety").json_schema
    rc, lines = run_schema(tiny_model, tmp_path, "--template", "safety",
                           "--schema-max-string", "16", "--schema-max-items", "2",
                           "--max-tokens", "160", "--temperature", "1.0", n=4)
    assert rc == 0
    for line in lines:
        assert line["template"] == "safety" and line["error"] is None, line
        jsonschema.validate(line["answer"], schema)


def test_an_answer_cut_by_max_tokens_is_an_error_line_with_the_raw_text(tiny_model, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SAFETY_SCHEMA))
    rc, lines = run_schema(tiny_model, tmp_path, "--json-schema", str(schema_file),
                           "--max-tokens", "3", n=3)
    assert rc == 1
    for line in lines:
        assert line["finish_reason"] == "length"
        assert "not valid JSON" in line["error"] and "--max-tokens" in line["error"]
        assert line["answer"] is None and line["answer_text"].startswith("{")


# ---- no model needed ------------------------------------------------------------------


def test_bounded_schema_adds_bounds_only_where_missing():
    schema = {"type": "object", "$defs": {"s": {"type": "string"}},
              "properties": {"a": {"type": "string", "maxLength": 3},
                             "b": {"type": "array", "items": {"type": "string"}},
                             "c": {"type": "string", "enum": ["x"]},
                             "d": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                             "e": {"type": "string", "minLength": 100},
                             "f": {"not": {"type": "string"}}}}
    b = bounded_schema(schema, max_string=10, max_items=4)
    assert schema["properties"]["b"] == {"type": "array", "items": {"type": "string"}}  # a copy
    props = b["properties"]
    assert props["a"]["maxLength"] == 3
    assert props["b"]["maxItems"] == 4 and props["b"]["items"]["maxLength"] == 10
    assert "maxLength" not in props["c"]
    assert props["d"]["anyOf"][0]["maxLength"] == 10
    assert props["e"]["maxLength"] == 100  # never below minLength
    assert props["f"] == {"not": {"type": "string"}}  # a bound inside "not" would invert it
    assert b["$defs"]["s"]["maxLength"] == 10
    assert b["additionalProperties"] is False


def test_the_grammar_keeps_control_characters_out_of_strings():
    grammar = StructuredOutput(FREE_TEXT_SCHEMA).grammar
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in grammar


def test_parse_reports_bad_json_and_schema_mismatches():
    so = StructuredOutput(SAFETY_SCHEMA)
    assert so.parse('{"helmet": true, "vest": false}', "stop").value == {"helmet": True,
                                                                         "vest": False}
    assert "not valid JSON" in so.parse('{"helmet": tr', "length").error
    assert "does not match the schema" in so.parse('{"helmet": 1, "vest": true}', "stop").error
    with pytest.raises(VlmserveError, match="invalid JSON schema"):
        StructuredOutput({"type": "no-such-type"})

"""Structured answers: a JSON schema -> a bounded grammar -> a parsed, validated object.

A grammar only guarantees that every token keeps the text a *prefix* of a valid
document. A model that wanders inside a free string (a random-weight demo model
always does) reaches ``max_tokens`` with the JSON still open. So the grammar is built
from a bounded copy of the schema (``bounded_schema``): strings without ``maxLength``
get one, arrays without ``maxItems`` get one, and objects with ``properties`` but no
``additionalProperties`` get ``false``. Every answer therefore has a finite worst-case
length; what still does not parse or validate against the user's schema (too small a
``max_tokens``, numeric bounds the grammar cannot express) becomes an error line that
keeps the raw text, never a crash.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from vlmserve.errors import RequestError, VlmserveError

DEFAULT_MAX_STRING = 64  # characters per string without maxLength
DEFAULT_MAX_ITEMS = 8  # items per array without maxItems

# String rules the grammar converter builds itself; adding maxLength would be wrong or moot.
_SHAPED_STRING_KEYS = ("maxLength", "enum", "const", "pattern", "format")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    return {t} if isinstance(t, str) else set(t) if isinstance(t, list) else set()


def _bound(node: Any, max_string: int, max_items: int) -> None:
    if not isinstance(node, dict):
        return
    types = _types(node)
    if "string" in types and not any(k in node for k in _SHAPED_STRING_KEYS):
        node["maxLength"] = max(max_string, int(node.get("minLength", 0)))
    if "array" in types and "maxItems" not in node:
        node["maxItems"] = max(max_items, int(node.get("minItems", 0)))
    if "object" in types and "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    for key in _SUBSCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                _bound(sub, max_string, max_items)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for sub in node[key]:
                _bound(sub, max_string, max_items)
    for key in ("items", "additionalProperties"):  # never "not": a bound there inverts
        items = node.get(key)
        for sub in items if isinstance(items, list) else [items]:
            _bound(sub, max_string, max_items)


def bounded_schema(schema: dict[str, Any], max_string: int = DEFAULT_MAX_STRING,
                   max_items: int = DEFAULT_MAX_ITEMS) -> dict[str, Any]:
    """A copy of ``schema`` whose every string and array has a length bound (see module doc).

    Limits: free-form objects (no ``properties``) and ``"type": [..]`` lists are
    left as the converter handles them, so they may still be cut by ``max_tokens``.
    """
    if max_string < 1 or max_items < 1:
        raise RequestError("schema string and item bounds must be >= 1")
    bounded = copy.deepcopy(schema)
    _bound(bounded, max_string, max_items)
    return bounded


def load_schema_file(path: str | Path) -> dict[str, Any]:
    """Read and check a JSON schema file (``VlmserveError`` with a one-line reason)."""
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VlmserveError(f"JSON schema file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VlmserveError(f"cannot read JSON schema file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise VlmserveError(f"JSON schema file {path} is not valid JSON: line {exc.lineno}: "
                            f"{exc.msg}") from None
    if not isinstance(schema, dict):
        raise VlmserveError(f"JSON schema file {path} must hold a JSON object")
    return schema


@dataclass(frozen=True)
class Parsed:
    """An answer checked against the schema: ``value`` when valid, else ``error``."""

    value: Any = None
    error: str | None = None


class StructuredOutput:
    """One schema: the grammar to sample with and the check of each answer."""

    def __init__(self, schema: dict[str, Any], max_string: int = DEFAULT_MAX_STRING,
                 max_items: int = DEFAULT_MAX_ITEMS) -> None:
        try:
            validator_cls = jsonschema.validators.validator_for(schema)
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise VlmserveError(f"invalid JSON schema: {exc.message}") from None
        from vlmserve.grammar import json_schema_to_grammar  # loads llama.cpp

        self.schema = schema
        self.grammar = json_schema_to_grammar(bounded_schema(schema, max_string, max_items))
        self._validator = validator_cls(schema)

    def parse(self, text: str, finish_reason: str) -> Parsed:
        """Parse and validate one answer's text."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = (" (cut at max_tokens: raise --max-tokens or lower --schema-max-string/"
                    "--schema-max-items)" if finish_reason == "length" else "")
            return Parsed(error=f"answer is not valid JSON: {exc.msg} at character "
                                f"{exc.pos}{hint}")
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return Parsed(error=f"answer does not match the schema at {where}: "
                                f"{errors[0].message}")
        return Parsed(value=value)

"""Structured answers: a JSON schema -> a bounded grammar -> a parsed, validated object.

The grammar comes from ``vlmserve.grammar.bounded_schema_grammar`` (the same one
the page and the API use for a template's schema): every string and array gets a
length bound, so every answer has a finite worst-case length. What still does not
parse or validate against the user's schema (too small a ``max_tokens``, numeric
bounds the grammar cannot express) becomes an error line that keeps the raw text,
never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from vlmserve.errors import VlmserveError
from vlmserve.grammar import DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING, bounded_schema_grammar


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
        self.schema = schema
        self.grammar = bounded_schema_grammar(schema, max_string, max_items)
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

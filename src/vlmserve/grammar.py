"""Structured output: JSON-schema and JSON-object grammars (GBNF) for the sampler.

The conversion is llama.cpp's own schema converter, shipped as pure Python in
llama-cpp-python (``llama_cpp.llama_grammar``); it is imported lazily so that code
which never asks for structured output does not need it.
"""

from __future__ import annotations

import json
from typing import Any

from vlmserve.errors import RequestError


def json_object_grammar() -> str:
    """A grammar for any JSON object (OpenAI's ``response_format: json_object``)."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar for JSON that matches ``schema``; ``RequestError`` if it cannot convert.

    Remote ``$ref``s are never fetched.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise RequestError("a JSON schema must be an object")
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises plain Python errors of many kinds
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise RequestError(f"the JSON schema cannot be used for structured output: {detail}") \
            from None

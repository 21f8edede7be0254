"""Structured output: JSON-object and JSON-schema grammars (GBNF) for the sampler.

The GBNF text goes into ``SamplingParams.grammar``; the engine's ``Sampler``
compiles it with ``llama_sampler_init_grammar`` so every sampled token keeps the
output a prefix of a JSON document that matches the schema.

The conversion is llama.cpp's own schema converter, shipped as pure Python in
llama-cpp-python (``llama_cpp.llama_grammar``). It is the one llama_cpp import
outside ``engine.llamacpp`` (it calls no C function), imported lazily so code
that never asks for structured output does not pay for it.

What the converter (llama-cpp-python 0.3.36) honours: types, ``properties`` and
``required`` (in ``properties`` order), ``additionalProperties``, ``items``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``enum``, ``const``,
``anyOf``/``oneOf``, ``pattern``, local ``$ref``. It ignores numeric bounds
(``minimum``/``maximum``), so validate the parsed answer against the schema as well.
"""

from __future__ import annotations

import json
from typing import Any

from vlmserve.errors import RequestError

# The converter's string character allows raw control characters, which JSON forbids
# inside strings (a random model emits them; json.loads rejects them). llama.cpp's
# current converter excludes them the same way.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_object_grammar() -> str:
    """A grammar for any JSON object (OpenAI's ``response_format: json_object``)."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


def json_schema_to_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar (start rule ``root``) for JSON documents matching ``schema``.

    Raises ``RequestError`` when the schema is not JSON or the converter rejects it.
    Remote ``$ref``s are never fetched.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise RequestError(f"a JSON schema must be an object, got {type(schema).__name__}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"the JSON schema is not plain JSON ({exc})") from None
    try:
        grammar = json_schema_to_gbnf(text)
    except Exception as exc:  # the converter raises bare Exceptions, KeyError, ValueError...
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise RequestError(f"cannot turn the JSON schema into a grammar: {detail}") from None
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR)

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

Bounds. A grammar only guarantees that every token keeps the text a *prefix* of a
valid document. A model that wanders inside a free string (a random-weight demo
model always does) reaches ``max_tokens`` with the JSON still open. So a schema
that comes with a template or a batch run is bounded first (``bounded_schema``):
strings without ``maxLength`` get one, arrays without ``maxItems`` get one, and
objects with ``properties`` but no ``additionalProperties`` get ``false``.
``bounded_schema_grammar`` is that path, used by the page, the API and batch work.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from vlmserve.errors import RequestError

DEFAULT_MAX_STRING = 64  # characters per string without maxLength
DEFAULT_MAX_ITEMS = 8  # items per array without maxItems

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


def bounded_schema_grammar(schema: dict[str, Any], max_string: int = DEFAULT_MAX_STRING,
                           max_items: int = DEFAULT_MAX_ITEMS) -> str:
    """The grammar of ``bounded_schema(schema)``: answers that always end (module doc)."""
    return json_schema_to_grammar(bounded_schema(schema, max_string, max_items))



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

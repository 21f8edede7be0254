"""Function tools on the request side: validate ``tools`` / ``tool_choice``, and decide
what the prompt shows, which grammar the sampler gets, and which calls may be parsed.

The model (Qwen3-VL) writes a call as ``<tool_call>\\n{"name": ..., "arguments": {...}}
\\n</tool_call>``, which is what its chat template asks for. ``auto`` lets it choose
freely; ``required`` and a named function constrain it by a GBNF grammar built from the
functions' parameter schemas, so a forced call always parses (even from a random model:
the schemas are bounded, see ``grammar.bounded_schema``). ``none`` leaves the tools out
of the prompt altogether, so the model answers in text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from vlmserve.errors import RequestError
from vlmserve.grammar import bounded_schema, json_schema_to_grammar

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# Parallel calls a forced (grammar-constrained) answer may hold; a model that keeps
# calling is stopped by the grammar, not by max_tokens.
MAX_FORCED_CALLS = 4

_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "8" is no integer (as OpenAI)

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    """One entry of ``tools``: only ``{"type": "function", "function": {...}}`` exists."""

    model_config = ConfigDict(extra="ignore", strict=True)  # "8" is no integer (as OpenAI)

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "8" is no integer (as OpenAI)

    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    model_config = ConfigDict(extra="ignore", strict=True)  # "8" is no integer (as OpenAI)

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for this generation.

    ``rendered``: the tool dicts the chat template shows the model (``None``: none);
    ``grammar``: GBNF forcing one or more calls (``required`` / named), else ``None``;
    ``names``: the functions a parsed call may name (empty: do not parse calls at all).
    """

    rendered: tuple[dict[str, Any], ...] | None = None
    grammar: str | None = None
    names: frozenset[str] = frozenset()

    @property
    def parses_calls(self) -> bool:
        return bool(self.names)


NO_TOOLS = ToolPlan()


def _check_names(tools: list[ToolDefinition]) -> None:
    seen: set[str] = set()
    for n, tool in enumerate(tools):
        name = tool.function.name
        if not _NAME_RE.fullmatch(name):
            raise RequestError(f"tools[{n}].function.name {name[:70]!r} must be 1-64 "
                               "characters of A-Z a-z 0-9 _ . : -")
        if name in seen:
            raise RequestError(f"tools[{n}]: the function name {name!r} is given twice")
        seen.add(name)
        params = tool.function.parameters
        if params is not None and params.get("type", "object") != "object":
            raise RequestError(f"tools[{n}].function.parameters must be an object schema")


def _call_schema(function: FunctionDefinition) -> dict[str, Any]:
    """The JSON schema of one call's body: ``{"name": <this name>, "arguments": {...}}``."""
    parameters = function.parameters or _EMPTY_PARAMETERS
    parameters = {"type": "object", **parameters}
    return {
        "type": "object",
        "properties": {"name": {"const": function.name}, "arguments": bounded_schema(parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def forced_call_grammar(functions: list[FunctionDefinition], parallel: bool) -> str:
    """GBNF for one call (or, with ``parallel``, up to ``MAX_FORCED_CALLS``) of the given
    functions, each wrapped in the model's ``<tool_call>`` tags, nothing else.

    Built by converting the calls' JSON schema with the project's converter and wrapping
    its ``root`` rule, so argument schemas get the same treatment as ``response_format``.
    """
    schemas = [_call_schema(f) for f in functions]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    body = json_schema_to_grammar(schema)
    lines = body.splitlines()
    if not any(line.startswith("root ::=") for line in lines):
        raise RequestError("cannot build a grammar for these tools")
    if re.search(r"(?<![\w-])root(?![\w-])", "\n".join(
            line for line in lines if not line.startswith("root ::="))):
        raise RequestError("recursive tool parameter schemas ($ref to the root) are not "
                           "supported with tool_choice required or a named function")
    renamed = [("tool-call-json ::=" + line[len("root ::="):]) if line.startswith("root ::=")
               else line for line in lines]
    repeat = f' ( "\\n" tool-call ){{0,{MAX_FORCED_CALLS - 1}}}' if parallel else ""
    head = [f"root ::= tool-call{repeat}",
            'tool-call ::= "<tool_call>\\n" tool-call-json "\\n</tool_call>"']
    return "\n".join(head + renamed) + "\n"


def plan_tools(tools: list[ToolDefinition] | None, tool_choice: ToolChoice | None,
               parallel_tool_calls: bool | None) -> ToolPlan:
    """The ``ToolPlan`` of a request (``RequestError`` for a choice that cannot be met)."""
    if not tools:
        if tool_choice in (None, "none", "auto"):
            return NO_TOOLS
        raise RequestError("tool_choice needs tools: this request has none")
    _check_names(tools)
    choice = tool_choice or "auto"
    if choice == "none":
        return NO_TOOLS
    rendered = tuple(tool.model_dump(exclude_none=True) for tool in tools)
    names = frozenset(tool.function.name for tool in tools)
    parallel = parallel_tool_calls is not False
    if choice == "auto":
        return ToolPlan(rendered, None, names)
    if choice == "required":
        grammar = forced_call_grammar([t.function for t in tools], parallel)
        return ToolPlan(rendered, grammar, names)
    if not isinstance(choice, NamedToolChoice):
        raise RequestError("tool_choice must be none, auto, required or a named function")
    wanted = choice.function.name
    chosen = [t.function for t in tools if t.function.name == wanted]
    if not chosen:
        raise RequestError(f"tool_choice names the function {wanted[:70]!r}, which is not "
                           "in tools")
    # A named choice means "call this function" once, as OpenAI does.
    return ToolPlan(rendered, forced_call_grammar(chosen, parallel=False),
                    frozenset({wanted}))


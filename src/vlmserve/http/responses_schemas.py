"""The body of ``POST /v1/responses`` (OpenAI's Responses API), and its input items.

Input items are kept as plain dicts here and read by ``responses_input`` (one place
that knows each item type and says which one is wrong); the rest is validated like the
chat-completions body: lenient about fields we do not use, strict about values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlmserve.errors import RequestError
from vlmserve.http.schemas import JSONSchemaFormat, RequestBody, ResponseFormat
from vlmserve.http.tools import (
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
    ToolChoice,
    ToolDefinition,
)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "8" is no integer (as OpenAI)


class TextFormat(_Lenient):
    """``text.format``: ``text``, ``json_object`` or ``json_schema`` (flat: name, schema)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    def as_response_format(self) -> ResponseFormat:
        """The same constraint in chat-completions terms (one grammar path for both)."""
        if self.type != "json_schema":
            return ResponseFormat(type=self.type)
        if self.schema_ is None:
            raise RequestError("text.format json_schema needs a schema")
        return ResponseFormat(type="json_schema", json_schema=JSONSchemaFormat(
            name=self.name, schema=self.schema_, strict=self.strict))


class TextOptions(_Lenient):
    format: TextFormat = TextFormat()


class FunctionTool(_Lenient):
    """A Responses function tool: flat ``{"type": "function", "name", "parameters"}``."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def as_tool(self) -> ToolDefinition:
        return ToolDefinition(type="function", function=FunctionDefinition(
            name=self.name, description=self.description, parameters=self.parameters,
            strict=self.strict))


class NamedFunctionChoice(_Lenient):
    type: Literal["function"]
    name: str


class ResponsesRequest(RequestBody):
    """The body of ``POST /v1/responses``."""

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    text: TextOptions | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    # vlmserve extensions, as in chat completions
    seed: int | None = Field(None, ge=0, lt=2**32)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)

    def chat_tools(self) -> list[ToolDefinition] | None:
        return [tool.as_tool() for tool in self.tools] if self.tools else None

    def chat_tool_choice(self) -> ToolChoice | None:
        if isinstance(self.tool_choice, NamedFunctionChoice):
            return NamedToolChoice(type="function",
                                   function=NamedFunction(name=self.tool_choice.name))
        return self.tool_choice

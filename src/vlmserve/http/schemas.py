"""OpenAI-compatible request and response bodies for ``/v1/chat/completions`` and ``/v1/models``.

Requests are lenient about fields we do not use (``user``, ``metadata`` ... are ignored,
as most OpenAI-compatible servers do) but strict about values: a temperature of 5 is a
400, not a silent clamp. vlmserve's own fields are ``session_id``, ``template``, ``top_k``,
``min_p`` and ``repeat_penalty`` on requests, and ``x_vlmserve`` on responses.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vlmserve.errors import RequestError
from vlmserve.http.tools import ToolChoice, ToolDefinition
from vlmserve.text_input import check_text
from vlmserve.types import TokenLogprob

# ---------------------------------------------------------------------------- requests


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "8" is no integer (as OpenAI)


class RequestBody(_Lenient):
    """A whole request body: every string in it (keys too) is checked as Unicode once,
    before any field is read (``text_input``): a lone surrogate is a 400 naming the field,
    never an error deep in the tokenizer."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        check_text(data)
        return data


class ImageURL(_Lenient):
    url: str = Field(description="data:image/...;base64,... (or http(s) when allowed)")
    # low: at most 256 vision tokens; high / auto: the server's budget (docs/images.md)
    detail: Literal["auto", "low", "high"] | None = None


class TextContentPart(_Lenient):
    type: Literal["text"]
    text: str


def url_object(value: Any) -> Any:
    """``{"url": value}`` for a bare string: some clients send ``"image_url": "data:..."``
    (or ``"video_url"``) instead of ``{"url": "data:..."}``."""
    return {"url": value} if isinstance(value, str) else value


class ImageContentPart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL

    @field_validator("image_url", mode="before")
    @classmethod
    def _plain_string_url(cls, value: Any) -> Any:
        return url_object(value)


class VideoURL(_Lenient):
    url: str = Field(description="data:video/...;base64,... (or http(s) when allowed)")
    # Frames sampled a second (default 2, Qwen's) and the most frames taken (docs/video.md).
    fps: float | None = Field(None, description="frames sampled per second (default 2)")
    max_frames: int | None = Field(None, description="most frames sampled from the clip")


class VideoContentPart(_Lenient):
    type: Literal["video_url"]
    video_url: VideoURL

    @field_validator("video_url", mode="before")
    @classmethod
    def _plain_string_url(cls, value: Any) -> Any:
        return url_object(value)


ContentPart = Annotated[TextContentPart | ImageContentPart | VideoContentPart,
                        Field(discriminator="type")]


class RequestFunctionCall(_Lenient):
    name: str
    arguments: str = "{}"  # JSON text, as OpenAI sends it


class RequestToolCall(_Lenient):
    """A call an earlier assistant message made (sent back with the conversation)."""

    id: str = ""
    type: Literal["function"] = "function"
    function: RequestFunctionCall


CONTENT_PART_TYPES = ("text", "image_url", "video_url")


class RequestMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[RequestToolCall] | None = None  # assistant messages
    tool_call_id: str | None = None  # tool messages

    @field_validator("content", mode="before")
    @classmethod
    def _known_part_types(cls, value: Any) -> Any:
        # Said here, the problem is the part's type; left to the union, pydantic would
        # report the first branch it tried ("content.str: Input should be a valid string").
        if isinstance(value, list):
            accepted = ", ".join(CONTENT_PART_TYPES)
            for i, part in enumerate(value):
                kind = part.get("type") if isinstance(part, dict) else None
                if not isinstance(part, dict) or "type" not in part:
                    raise ValueError(f"part {i} must be an object with a type ({accepted})")
                if kind not in CONTENT_PART_TYPES:
                    raise ValueError(f"part {i} has type {str(kind)[:40]!r}; accepted "
                                     f"types: {accepted}")
        elif value is not None and not isinstance(value, str):
            raise ValueError("content must be a string, a list of parts or null")
        return value


class StreamOptions(_Lenient):
    include_usage: bool = False
    # vlmserve's opt-in: progress chunks (``x_vlmserve.progress``) before the first token
    x_vlmserve_progress: bool = False


class JSONSchemaFormat(_Lenient):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(RequestBody):
    """The body of ``POST /v1/chat/completions``."""

    model: str | None = Field(None, description="accepted and ignored: one model is loaded")
    messages: list[RequestMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    # OpenAI's range; applied by llama.cpp's penalties sampler (docs/api.md for defaults)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=0, lt=2**32)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=1, description="only one choice is generated")
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    # vlmserve extensions
    session_id: str | None = Field(None, description="server-side conversation to continue")
    template: str | None = Field(None, description="prompt template name (see docs)")
    x_image_min_tokens: int | None = Field(
        None, ge=1, description="floor on vision tokens per image, within the server's bounds")
    x_image_max_tokens: int | None = Field(
        None, ge=1, description="cap on vision tokens per image, within the server's bounds")
    x_boxes: bool = Field(False, description="ask for Qwen's JSON boxes and return them "
                          "mapped to the photo's pixels in x_vlmserve.boxes")

    @property
    def n_top_logprobs(self) -> int | None:
        """The engine's ``SamplingParams.logprobs``: ``None`` unless ``logprobs`` is set."""
        if not self.logprobs:
            if self.top_logprobs is not None:
                raise RequestError("top_logprobs needs logprobs: true")
            return None
        return self.top_logprobs or 0

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (len(value) > 16 or not all(value)):
            raise ValueError("stop must be at most 16 non-empty strings")
        if value == "":
            raise ValueError("stop must not be empty")
        return value

    @property
    def reply_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


# ---------------------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens served from the slot's KV cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class VlmserveExtension(BaseModel):
    """Figures OpenAI has no field for, on the final response or chunk."""

    ttft_ms: float = Field(description="submit to first token")
    queue_ms: float
    prefill_ms: float
    decode_tokens_per_s: float
    total_ms: float
    images: int
    image_tokens: int
    image_cache_hits: int = Field(description="images whose embeddings were in RAM")
    image_disk_hits: int = Field(0, description="images read from the disk cache tier")
    image_encode_ms: float = Field(0.0, description="vision-encoder time for this request")
    cached_tokens: int
    dropped_turns: int = Field(description="oldest turns left out by the sliding window")
    dropped_images: int
    session_id: str | None = None
    template: str | None = None
    boxes: list[dict[str, Any]] | None = Field(
        None, description="grounding requests only: the answer's boxes and points, on the "
        "model's 0-1000 grid and in the photo's pixels (docs/api.md)")
    videos: list[dict[str, Any]] | None = Field(
        None, description="requests with clips only: per clip the frames sampled, frame "
        "pairs, frame size and each pair's timestamp in seconds (docs/video.md)")
    replica: str | None = Field(
        None, description="the engine replica that answered (serve --ray only)")


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text of an object


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


FinishReasonName = Literal["stop", "length", "tool_calls"]


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut]

    @classmethod
    def of(cls, entries: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> ChoiceLogprobs:
        """OpenAI's shape: each token as text (invalid UTF-8 shown as U+FFFD) and bytes."""
        def text(raw: bytes) -> str:
            return raw.decode("utf-8", errors="replace")
        return cls(content=[TokenLogprobOut(
            token=text(e.bytes), logprob=e.logprob, bytes=list(e.bytes),
            top_logprobs=[TopLogprob(token=text(b), logprob=v, bytes=list(b))
                          for _, b, v in e.top]) for e in entries])


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReasonName
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    x_vlmserve: VlmserveExtension


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed call: the first names it (``id``, ``type``, ``name``), the
    next ones add to its ``arguments``; ``index`` says which call."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReasonName | None = None
    logprobs: ChoiceLogprobs | None = None


class PhaseProgress(BaseModel):
    """Where the request is before its first token (``stream_options.x_vlmserve_progress``)."""

    phase: Literal["queued", "encoding", "prefill"] = Field(
        description="queued for a slot, encoding the picture, reading the prompt")
    position: int = Field(0, description="queued: place in line (1 = next)")
    elapsed_ms: float = Field(description="since the server took the request")


class ProgressExtension(BaseModel):
    """``x_vlmserve`` of a progress chunk (no choices): one phase change."""

    progress: PhaseProgress


class ChatCompletionChunk(BaseModel):
    """One SSE event; ``sse_json()`` leaves out the fields that were not set."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    x_vlmserve: VlmserveExtension | ProgressExtension | None = None

    def sse_json(self) -> str:
        """Compact JSON with only what was set (a content delta carries no ``role``, a
        plain chunk no ``usage``), ``object`` and each choice's ``index`` always included."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data["object"] = self.object
        for dumped, choice in zip(data.get("choices", []), self.choices, strict=True):
            dumped["index"] = choice.index  # always sent: SDK accumulators index by it
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "vlmserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

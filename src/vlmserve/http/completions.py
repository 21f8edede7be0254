"""A chat-completion request turned into an engine ``Request`` (and back into a response).

The parts of ``/v1/chat/completions`` that do not depend on streaming or not: messages
and images, session history, template, sliding window, sampling parameters and the
grammar for structured output; and the response's usage and ``x_vlmserve`` figures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlmserve.chat import ChatMessage, ImagePart, TextPart, ToolCall
from vlmserve.config import QWEN_PRESENCE_PENALTY, TokenBudget, default_penalty
from vlmserve.errors import RequestError
from vlmserve.grammar import json_object_grammar, json_schema_to_grammar
from vlmserve.grounding import boxes_for
from vlmserve.http.conversation import (
    PreparedChat,
    check_request_text,
    check_system_first,
    compose,
    fit_and_render,
    prompt_budget,
    to_chat_messages,
)
from vlmserve.http.engine_holder import LoadedModel
from vlmserve.http.schemas import (
    ChatCompletionRequest,
    PromptTokensDetails,
    ResponseFormat,
    Usage,
    VlmserveExtension,
)
from vlmserve.http.services import Services
from vlmserve.http.tools import NO_TOOLS, ToolPlan, plan_tools
from vlmserve.images.budget import GROUNDING_MIN_TOKENS, narrow_budget
from vlmserve.settings import ServerSettings
from vlmserve.templates import GROUNDING_TEMPLATE, PromptTemplate
from vlmserve.types import (
    ImageGeometry,
    PreparedImage,
    Prompt,
    Request,
    RequestStats,
    SamplingParams,
)
from vlmserve.video.summary import clip_summary


@dataclass(frozen=True)
class CompletionJob:
    """Everything needed to run one chat completion and answer it."""

    id: str  # chatcmpl-..., also the engine's request id
    created: int
    model: LoadedModel
    request: Request
    chat: PreparedChat
    session_id: str | None
    template: str | None
    stream: bool
    include_usage: bool
    tools: ToolPlan = NO_TOOLS
    boxes: bool = False  # a grounding request: parse the answer's boxes
    geometry: ImageGeometry | None = None  # of the image the boxes refer to (the newest)

    def store_turn(self, services: Services, answer: str | None,
                   calls: tuple[ToolCall, ...] = ()) -> None:
        """Save the conversation so far (as trimmed) plus the answer in the session."""
        if self.session_id is not None:
            parts = (TextPart(answer),) if answer else ()
            reply = ChatMessage("assistant", parts, tool_calls=calls)
            services.sessions.replace(self.session_id, [*self.chat.messages, reply])

    def usage(self, stats: RequestStats) -> Usage:
        return Usage(
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            total_tokens=stats.prompt_tokens + stats.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_tokens),
        )

    def extension(self, stats: RequestStats, answer: str = "") -> VlmserveExtension:
        return VlmserveExtension(
            ttft_ms=round(stats.ttft_ms, 2),
            queue_ms=round(stats.queue_ms, 2),
            prefill_ms=round(stats.prefill_ms, 2),
            decode_tokens_per_s=round(stats.decode_tokens_per_s, 2),
            total_ms=round(stats.total_ms, 2),
            images=stats.images,
            image_tokens=stats.image_tokens,
            image_cache_hits=stats.image_cache_hits,
            image_disk_hits=stats.image_disk_hits,
            image_encode_ms=round(stats.image_encode_ms, 2),
            cached_tokens=stats.cached_tokens,
            dropped_turns=self.chat.dropped_turns,
            dropped_images=self.chat.dropped_images,
            session_id=self.session_id,
            template=self.template,
            boxes=boxes_for(answer, self.geometry) if self.boxes else None,
            videos=[clip_summary(c) for c in self.chat.prompt.clips] or None,
            replica=stats.replica,
        )


def grammar_for(response_format: ResponseFormat | None,
                template: PromptTemplate | None, tools: ToolPlan = NO_TOOLS) -> str | None:
    """The sampler grammar: a forced tool call's, else the request's ``response_format``,
    else the template's JSON schema (a template like ``safety`` answers JSON by design)."""
    if tools.grammar is not None:
        if response_format is not None and response_format.type != "text":
            raise RequestError("response_format cannot be combined with tool_choice "
                               "required or a named function: the call's grammar decides")
        return tools.grammar
    if response_format is not None:
        if response_format.type == "json_object":
            return json_object_grammar()
        if response_format.type == "json_schema":
            if response_format.json_schema is None:
                raise RequestError("response_format json_schema needs a json_schema object")
            return json_schema_to_grammar(response_format.json_schema.schema_)
        return None  # "text"
    if template is not None:
        return template.grammar()
    return None


def sampling_for(body: ChatCompletionRequest, max_tokens: int, grammar: str | None,
                 settings: ServerSettings | None = None) -> SamplingParams:
    """Sampling parameters: the request's values where given, Qwen3-VL's defaults else
    (the server's presence / frequency penalties; none for a greedy request)."""
    temperature = body.temperature if body.temperature is not None else SamplingParams.temperature
    presence, frequency = QWEN_PRESENCE_PENALTY, 0.0
    if settings is not None:
        presence, frequency = settings.presence_penalty, settings.frequency_penalty
    given: dict[str, Any] = {
        "presence_penalty": body.presence_penalty if body.presence_penalty is not None
        else default_penalty(temperature, presence),
        "frequency_penalty": body.frequency_penalty if body.frequency_penalty is not None
        else default_penalty(temperature, frequency),
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
        "seed": body.seed,
    }
    return SamplingParams(max_tokens=max_tokens, stop=body.stop_strings, grammar=grammar,
                          logprobs=body.n_top_logprobs,
                          **{k: v for k, v in given.items() if v is not None})


async def prepare_job(services: Services, model: LoadedModel, body: ChatCompletionRequest,
                      session_id: str | None) -> CompletionJob:
    """Build the job. ``session_id`` is the request's, validated; call this holding that
    session's lock, since it reads the session.

    Raises ``VlmserveError`` subclasses for everything the client can fix (bad image,
    unknown template, conversation too long ...).
    """
    settings = services.settings
    named = services.templates.get(body.template) if body.template else None
    template = named
    if body.x_boxes and template is None:
        # Its system prompt asks for boxes; its grammar is not imposed on a free question
        # (the answer may hold points, or prose around the list).
        template = services.templates.get(GROUNDING_TEMPLATE)
    boxes = body.x_boxes or bool(template and template.boxes)
    tools = plan_tools(body.tools, body.tool_choice, body.parallel_tool_calls)
    grammar = grammar_for(body.response_format, named, tools)
    max_tokens = body.reply_limit or settings.max_tokens
    sampling = sampling_for(body, max_tokens, grammar, settings)  # before images are decoded
    tokens_for = image_budget(services.images.options.tokens, body, template, boxes)
    tokens_for(None)  # a bad budget is a 400 before any image is decoded

    new = await to_chat_messages(body.messages, services.images, tokens_for,
                                 services.videos)
    check_system_first(new)
    check_request_text(model, settings, new, tools.rendered)
    history = (services.sessions.get(session_id, offered=images_of(new))
               if session_id is not None else [])
    messages = compose(history, new, template)
    budget = prompt_budget(settings.context_budget, model.engine.info.n_ctx_per_slot,
                           max_tokens)
    chat = await asyncio.to_thread(fit_and_render, model, messages, budget, tools.rendered)

    job_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    return CompletionJob(
        id=job_id,
        created=int(time.time()),
        model=model,
        request=Request(job_id, chat.prompt, sampling, session_id=session_id,
                        report_phases=body.stream and wants_progress(body)),
        chat=chat,
        session_id=session_id,
        template=template.name if template else None,
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        tools=tools,
        boxes=boxes,
        geometry=newest_geometry(chat.prompt),
    )


def wants_progress(body: ChatCompletionRequest) -> bool:
    """Progress chunks only when asked: plain OpenAI clients see OpenAI's stream."""
    return bool(body.stream_options and body.stream_options.x_vlmserve_progress)


def image_budget(server: TokenBudget, body: ChatCompletionRequest,
                 template: PromptTemplate | None, boxes: bool,
                 ) -> Callable[[str | None], TokenBudget]:
    """Each image's token budget from its ``detail``: the server's bounds narrowed by the
    request's ``x_image_min_tokens`` / ``x_image_max_tokens`` and the task's floor
    (grounding and OCR: 1024, never past the cap)."""
    floor = template.min_image_tokens if template else None
    if boxes:
        floor = max(floor or 0, GROUNDING_MIN_TOKENS)

    def tokens_for(detail: str | None) -> TokenBudget:
        return narrow_budget(server, detail=detail, min_tokens=body.x_image_min_tokens,
                             max_tokens=body.x_image_max_tokens, floor=floor)
    return tokens_for


def images_of(messages: list[ChatMessage]) -> list[PreparedImage]:
    return [p.image for m in messages for p in m.parts if isinstance(p, ImagePart)]


def newest_geometry(prompt: Prompt) -> ImageGeometry | None:
    """The geometry of the prompt's last image: the one a grounding answer is about."""
    images = [p for p in prompt.parts if isinstance(p, PreparedImage)]
    return images[-1].geometry if images else None

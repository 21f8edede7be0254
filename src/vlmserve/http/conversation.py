"""From what a client sent to the ``Prompt`` the engine runs.

Shared by the API and the page: join a session's stored history with the new messages,
apply a prompt template, drop the oldest turns that do not fit (``fit_to_budget``), and
render with the model's chat template.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlmserve.chat import (
    ChatMessage,
    ImagePart,
    MessagePart,
    TextPart,
    ToolCall,
    check_text_length,
    fit_to_budget,
)
from vlmserve.config import TokenBudget
from vlmserve.errors import RequestError
from vlmserve.http.engine_holder import LoadedModel
from vlmserve.http.image_loader import ImageLoader
from vlmserve.http.schemas import RequestMessage, TextContentPart, VideoContentPart
from vlmserve.http.video_loader import VideoLoader, load_video
from vlmserve.settings import ServerSettings
from vlmserve.templates import PromptTemplate
from vlmserve.types import Prompt

# The prompt always keeps at least this share of the window, however large max_tokens is:
# a reply that needs more is cut ("length") when the slot's context fills.
_MIN_PROMPT_SHARE = 0.5


@dataclass(frozen=True)
class PreparedChat:
    """A conversation ready for the engine."""

    prompt: Prompt
    messages: tuple[ChatMessage, ...]  # what was kept (the session stores this)
    prompt_tokens: int
    dropped_turns: int
    dropped_images: int


async def to_chat_messages(messages: Sequence[RequestMessage], images: ImageLoader,
                           tokens_for: Callable[[str | None], TokenBudget] | None = None,
                           videos: VideoLoader | None = None) -> list[ChatMessage]:
    """API messages to ``ChatMessage``s, images decoded. ``developer`` counts as system;
    an assistant's ``tool_calls`` and a tool message's ``tool_call_id`` are kept.

    ``tokens_for(detail)`` gives each image's token budget from its ``detail``
    (the server's budget when None). ``video_url`` parts become clips (``videos``)."""
    out: list[ChatMessage] = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        parts: list[MessagePart] = []
        if isinstance(message.content, str):
            if message.content:
                parts.append(TextPart(message.content))
        elif message.content is not None:
            for part in message.content:
                if isinstance(part, TextContentPart):
                    if part.text:
                        parts.append(TextPart(part.text))
                elif isinstance(part, VideoContentPart):
                    parts.append(ImagePart(await load_video(part.video_url, videos)))
                else:
                    tokens = tokens_for(part.image_url.detail) if tokens_for else None
                    parts.append(ImagePart(await images.load(part.image_url.url, tokens)))
        calls = tuple(ToolCall(call.id, call.function.name, call.function.arguments)
                      for call in message.tool_calls or ())
        out.append(ChatMessage(role, tuple(parts), tool_calls=calls,
                               tool_call_id=message.tool_call_id))
    return out


def check_request_text(model: LoadedModel, settings: ServerSettings,
                       new: Sequence[ChatMessage],
                       tools: Sequence[dict[str, Any]] | None = None) -> None:
    """The request's own text (``new`` messages and tool descriptions, not the stored
    history the sliding window trims) within ``settings.max_text_chars``, before any
    tokenizing: ``ContextOverflowError`` otherwise."""
    limit = settings.max_text_chars(model.engine.info.n_ctx_per_slot)
    tools_chars = sum(len(json.dumps(tool, ensure_ascii=False)) for tool in tools or ())
    check_text_length(new, limit, tools_chars)


def check_system_first(messages: Sequence[ChatMessage], param: str = "messages") -> None:
    """A request's system (and developer) messages come before all others.

    Qwen3-VL's chat template shows only a leading system prompt; a system message later
    on would be dropped or moved, changing what the client meant, so it is refused
    (400) instead, naming the message.
    """
    started = False
    for n, message in enumerate(messages):
        if message.role != "system":
            started = True
        elif started:
            raise RequestError(
                f"{param}.{n} is a system message after the conversation started; system "
                "and developer messages must come first (Qwen3-VL's chat template has only "
                "a leading system prompt)", param=f"{param}.{n}.role")


def compose(history: Sequence[ChatMessage], new: Sequence[ChatMessage],
            template: PromptTemplate | None = None) -> list[ChatMessage]:
    """The conversation to run: stored ``history`` followed by the ``new`` messages.

    System messages in ``new`` replace the stored ones; otherwise the stored ones stay.
    A template's system prompt goes first (once); when the last user message has no text
    (an image alone), the template's question is added to it.
    """
    system = [m for m in new if m.role == "system"] or [m for m in history if m.role == "system"]
    body = [m for m in history if m.role != "system"] + [m for m in new if m.role != "system"]
    if template is not None:
        if template.system and template.system not in (m.text for m in system):
            system.insert(0, ChatMessage.system(template.system))
        last_user = max((i for i, m in enumerate(body) if m.role == "user"), default=None)
        if last_user is not None and not body[last_user].text.strip():
            message = body[last_user]
            body[last_user] = ChatMessage("user", (*message.parts, TextPart(template.prompt)))
    return system + body


def prompt_budget(context_budget: int, n_ctx_per_slot: int, max_tokens: int) -> int:
    """Tokens the prompt may use: the window less the reply's reserve.

    The window is ``context_budget`` capped by the slot's context. The reply's reserve is
    ``max_tokens`` but never more than half the window, so a large ``max_tokens`` cannot
    squeeze the prompt to nothing.
    """
    window = min(context_budget, n_ctx_per_slot)
    reserve = min(max_tokens, int(window * (1 - _MIN_PROMPT_SHARE)))
    return window - reserve


def fit_and_render(model: LoadedModel, messages: Sequence[ChatMessage], budget: int,
                   tools: Sequence[dict[str, Any]] | None = None) -> PreparedChat:
    """Trim to ``budget`` and render (CPU work: tokenizes; call it from a worker thread).
    ``tools`` go to the chat template (their description counts against the budget).

    Raises ``RequestError`` for a malformed conversation and ``ContextOverflowError``
    when even the system prompt plus the newest turn do not fit.
    """
    counter = model.renderer.token_counter(model.engine.count_prompt_tokens, tools)
    trim = fit_to_budget(messages, budget, counter)
    prompt = model.renderer.render(trim.messages, tools=tools)
    return PreparedChat(prompt, trim.messages, trim.prompt_tokens, trim.dropped_turns,
                        trim.dropped_images)

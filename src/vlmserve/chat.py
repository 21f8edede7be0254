"""Conversations: chat messages, rendering with the model's chat template, sliding window.

``ChatRenderer`` turns ``ChatMessage``s into a ``Prompt`` (template text with the
images in their places); ``fit_to_budget`` drops the oldest turns of a long
conversation until its prompt fits a token budget. Neither knows about llama.cpp:
token counts come from a function the engine supplies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vlmserve.chat_template import IMAGE_PLACEHOLDER, QWEN3VL_CHAT_TEMPLATE
from vlmserve.errors import ContextOverflowError, RequestError, VlmserveError
from vlmserve.types import PreparedClip, PreparedImage, Prompt, PromptPart, UserText

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
# Roles whose messages may carry images: a user's question, and a tool's result (Qwen3-VL's
# template renders images inside <tool_response>, e.g. a screenshot a GUI agent took).
IMAGE_ROLES: tuple[str, ...] = ("user", "tool")

# Strings that mean "an image goes here" to Qwen3-VL or to llama.cpp's mtmd (its default
# media marker). Only the template's own text may hold them (``_interleave`` checks it);
# typed into a message they are text like any other (``UserText``).
RESERVED_MARKERS: tuple[str, ...] = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<__media__>",
)

# Message text goes through the chat template between two Unicode noncharacters (code
# points Unicode sets aside "for internal use"), so that the rendered text can be cut back
# into the template's own text and what clients sent: the engine tokenizes the first with
# special-token parsing on and the second as plain text (``UserText``), so typed
# ``<|im_start|>`` can never open a turn. Client text holding either is refused.
MARK_OPEN, MARK_CLOSE = "\ufdd0", "\ufdd1"
_MARKED = re.compile(f"{MARK_OPEN}([^{MARK_OPEN}{MARK_CLOSE}]*){MARK_CLOSE}")
_ESCAPED_MARK = re.compile(r"(?<!\\)((?:\\\\)*)\\ufdd([01])")


def _mark(text: str) -> str:
    """``text`` between the markers (``""`` stays empty, as templates test emptiness)."""
    if MARK_OPEN in text or MARK_CLOSE in text:
        raise RequestError("message text contains U+FDD0 or U+FDD1, Unicode noncharacters "
                           "this server reserves for its own use")
    return MARK_OPEN + text + MARK_CLOSE if text else ""


def _mark_data(value: Any, keys: bool = True) -> Any:
    """Every string in a JSON value marked (object keys too when ``keys``)."""
    if isinstance(value, str):
        return _mark(value)
    if isinstance(value, dict):
        return {(_mark(k) if keys and isinstance(k, str) else k): _mark_data(v, keys)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_data(v, keys) for v in value]
    return value


def _mark_tool(tool: Any) -> Any:
    """A tool dict with its client text marked: the description and the whole parameter
    schema. The structure a template reads (``type``, ``function``, ``name``) stays as is;
    names are already limited to ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        return _mark_data(tool, keys=False)
    function = dict(tool["function"])
    for field in ("description", "parameters"):
        if field in function:
            function[field] = _mark_data(function[field])
    return {**tool, "function": function}


class ChatTemplateError(VlmserveError):
    """The chat template itself is broken (does not compile, fails, misplaces images)."""

    http_status = 500
    code = "chat_template_error"


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class TextPart:
    """A piece of message text."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"TextPart.text must be a str, got {type(self.text).__name__}")


@dataclass(frozen=True)
class ImagePart:
    """An image inside a (user) message, already decoded and resized; or a video clip.

    A clip takes an image's place in the template (one placeholder): Qwen's processor
    replaces a video's whole placeholder by the clip's timestamped frame pairs, and so
    does the backend with a ``PreparedClip``, so templates need no video branch.
    """

    image: PreparedImage | PreparedClip

    def __post_init__(self) -> None:
        if not isinstance(self.image, PreparedImage | PreparedClip):
            raise TypeError(
                f"ImagePart.image must be a PreparedImage or PreparedClip, got "
                f"{type(self.image).__name__}"
            )


MessagePart = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    """A function call the assistant made: its id, the function's name, JSON arguments.

    ``arguments`` is the JSON text of an object, as OpenAI's API carries it.
    """

    id: str
    name: str
    arguments: str = "{}"

    def template_dict(self) -> dict[str, Any]:
        """The call as chat templates expect it (Hugging Face's convention): arguments as
        an object when they parse, else the text as given; all of it marked as client text."""
        try:
            arguments: Any = _mark_data(json.loads(self.arguments))
        except ValueError:
            arguments = _mark(self.arguments)
        return {"id": _mark(self.id), "type": "function",
                "function": {"name": _mark(self.name), "arguments": arguments}}


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation: a role and its parts, in order.

    Build them with ``ChatMessage.system(text)``, ``ChatMessage.user(text, *images)``
    and ``ChatMessage.assistant(text)``. An unknown role raises ``RequestError``.
    """

    role: Role
    parts: tuple[MessagePart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # assistant messages only
    tool_call_id: str | None = None  # tool messages: which call this result answers

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RequestError(
                f"unknown message role {self.role!r}; expected system, user, assistant or tool"
            )
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.tool_calls and self.role != "assistant":
            raise RequestError(f"a {self.role} message cannot carry tool calls")
        parts = tuple(self.parts)  # accept any iterable, store a tuple (hashable, immutable)
        for part in parts:
            if not isinstance(part, (TextPart, ImagePart)):
                raise TypeError(
                    f"message parts must be TextPart or ImagePart, got {type(part).__name__}"
                )
        object.__setattr__(self, "parts", parts)

    @classmethod
    def system(cls, text: str) -> ChatMessage:
        return cls("system", (TextPart(text),))

    @classmethod
    def user(cls, text: str = "", *images: PreparedImage) -> ChatMessage:
        """A user message: the images first, then the text (omitted when empty).

        Images before the question is the order Qwen-VL models are trained on.
        """
        parts: list[MessagePart] = [ImagePart(image) for image in images]
        if text:
            parts.append(TextPart(text))
        return cls("user", tuple(parts))

    @classmethod
    def assistant(cls, text: str) -> ChatMessage:
        return cls("assistant", (TextPart(text),))

    @property
    def text(self) -> str:
        """All text parts joined (images left out)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[PreparedImage, ...]:
        return tuple(p.image for p in self.parts if isinstance(p, ImagePart))

    @property
    def is_empty(self) -> bool:
        """No image and no non-blank text."""
        return not self.text.strip() and not any(isinstance(p, ImagePart) for p in self.parts)


# ---------------------------------------------------------------------------- rendering


class _TemplateRaised(Exception):
    """Raised by ``raise_exception(...)`` inside a template: it rejects the conversation."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes <, >, & and '; chat templates (HF's convention) want
    # plain JSON, non-ASCII kept. Escaped to ASCII, the text markers are put back raw.
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)
    if ensure_ascii:
        text = _ESCAPED_MARK.sub(lambda m: m.group(1) + chr(0xFDD0 + int(m.group(2))), text)
    return text


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _template_environment() -> ImmutableSandboxedEnvironment:
    """A sandbox set up like Hugging Face's ``apply_chat_template``.

    GGUF templates are written for that environment (block trimming, loop controls,
    ``raise_exception``, ``strftime_now``, a non-escaping ``tojson``); the sandbox keeps a
    template taken from a downloaded file from reaching Python internals.
    """
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _validate(messages: Sequence[ChatMessage], add_generation_prompt: bool) -> None:
    if not messages:
        raise RequestError("the conversation is empty")
    seen_other = False
    for n, message in enumerate(messages, start=1):
        if not isinstance(message, ChatMessage):
            raise TypeError(f"message {n} is a {type(message).__name__}, not a ChatMessage")
        if message.role not in ROLES:  # ChatMessage checks too; this guards hand-made copies
            raise RequestError(f"message {n} has unknown role {message.role!r}")
        if message.role == "system":
            if seen_other:
                raise RequestError(
                    f"message {n} is a system message; system messages must come first"
                )
        else:
            seen_other = True
        if message.role not in IMAGE_ROLES and message.images:
            raise RequestError(
                f"message {n} ({message.role}) has an image; only user and tool messages "
                "may carry images"
            )
        if message.role == "user" and message.is_empty:
            raise RequestError(f"message {n} (user) is empty: it has no text and no image")
    if add_generation_prompt and messages[-1].role not in ("user", "tool"):
        raise RequestError(
            f"the last message must be from the user (or a tool's result), not from the "
            f"{messages[-1].role}"
        )


def _template_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as the dicts a chat template expects.

    Leading system messages are merged into one (blank line between): Qwen3-VL's template,
    like most, renders only ``messages[0]`` as the system prompt. A message without images
    gets string content, the form every template understands; one with images gets a list
    of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts, in order. All
    message text is marked (``_mark``) so that it comes out of the template as ``UserText``.
    """
    n_system = 0
    while n_system < len(messages) and messages[n_system].role == "system":
        n_system += 1
    out: list[dict[str, Any]] = []
    if n_system:
        system_text = "\n\n".join(_mark(m.text) for m in messages[:n_system])
        out.append({"role": "system", "content": system_text})
    for message in messages[n_system:]:
        if message.images:
            content: str | list[dict[str, str]] = [
                {"type": "image"} if isinstance(p, ImagePart)
                else {"type": "text", "text": _mark(p.text)}
                for p in message.parts
            ]
        else:
            content = _mark(message.text)
        entry: dict[str, Any] = {"role": message.role, "content": content}
        if message.tool_calls:
            entry["tool_calls"] = [call.template_dict() for call in message.tool_calls]
        if message.tool_call_id is not None:
            entry["tool_call_id"] = _mark(message.tool_call_id)
        out.append(entry)
    return out


def _interleave(text: str, images: Sequence[PreparedImage]) -> Prompt:
    """The rendered text cut into template text, message text (``UserText``) and images.

    Image placeholders and vision markers count only in the template's own text: typed
    into a message they are text.
    """
    pieces = _MARKED.split(text)  # template, message, template, message, ..., template
    template_pieces = pieces[::2]
    if any(MARK_OPEN in p or MARK_CLOSE in p for p in template_pieces):
        raise ChatTemplateError("the chat template cut a message's text apart; it must "
                                "render message text whole")
    n_placeholders = sum(p.count(IMAGE_PLACEHOLDER) for p in template_pieces)
    if n_placeholders != len(images):
        raise ChatTemplateError(
            f"the chat template emitted {n_placeholders} image placeholders for "
            f"{len(images)} images; it must emit {IMAGE_PLACEHOLDER} once per image part"
        )
    parts: list[PromptPart] = []
    next_image = iter(images)
    for i, piece in enumerate(pieces):
        if i % 2:
            if piece:
                parts.append(UserText(piece))
            continue
        for j, segment in enumerate(piece.split(IMAGE_PLACEHOLDER)):
            for marker in RESERVED_MARKERS[:3]:
                if marker in segment:
                    raise ChatTemplateError(
                        f"the chat template emitted {marker} outside {IMAGE_PLACEHOLDER}; "
                        "llama.cpp adds the vision markers around each image itself"
                    )
            if j:
                parts.append(next(next_image))
            if segment:  # two adjacent images have nothing between them
                parts.append(segment)
    return Prompt(parts=tuple(parts))


class ChatRenderer:
    """Renders conversations with a chat template into ``Prompt``s.

    ``template_source`` is Jinja text: the GGUF's ``tokenizer.chat_template``, or
    ``QWEN3VL_CHAT_TEMPLATE`` when the GGUF has none. It is compiled once, in a sandbox.
    ``bos_token`` / ``eos_token`` are passed to templates that use them (leave ``bos_token``
    empty when the tokenizer adds BOS itself, or it appears twice).
    """

    def __init__(self, template_source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        if not isinstance(template_source, str) or not template_source.strip():
            raise ChatTemplateError("the chat template is empty")
        self._bos_token = bos_token
        self._eos_token = eos_token
        try:
            self._template = _template_environment().from_string(template_source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"the chat template does not compile: line {exc.lineno}: {_one_line(exc.message)}"
            ) from exc

    @classmethod
    def for_model(cls, chat_template: str | None) -> ChatRenderer:
        """The renderer for a model: its GGUF's chat template, or Qwen3-VL's when it has none.

        Pass ``engine.info.chat_template``; every layer that renders for an engine
        (HTTP, page, CLI, batch, bench) goes through here, so they cannot differ.
        """
        return cls(chat_template or QWEN3VL_CHAT_TEMPLATE)

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True,
               tools: Sequence[dict[str, Any]] | None = None) -> Prompt:
        """Render ``messages``; each image takes the place of one ``IMAGE_PLACEHOLDER``.

        The placeholder (vision markers included) is replaced whole, because llama.cpp's
        mtmd wraps every image in ``<|vision_start|>``/``<|vision_end|>`` itself. Text
        between adjacent images is omitted when empty. ``tools`` (OpenAI's tool dicts) are
        passed to the template, which describes them to the model (Qwen3-VL's: a
        ``# Tools`` system block); ``None`` or empty renders no tool block.

        Message text and the tools' descriptions come out as ``UserText`` (tokenized as
        text, never as control tokens), the template's own text as ``str``.

        Raises ``RequestError`` for an empty conversation, an unknown role, a system message
        after the first non-system one, an image outside a user message, an empty user
        message, text holding U+FDD0 / U+FDD1 (the markers), a last message not from the user
        (when ``add_generation_prompt``), or a template that calls ``raise_exception``;
        ``ChatTemplateError`` when the template fails or misplaces images.
        """
        messages = tuple(messages)
        _validate(messages, add_generation_prompt)
        marked_messages = _template_messages(messages)
        marked_tools = [_mark_tool(tool) for tool in tools] if tools else None
        try:
            text = self._template.render(
                messages=marked_messages,
                add_generation_prompt=add_generation_prompt,
                tools=marked_tools,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except _TemplateRaised as exc:
            raise RequestError(
                f"the chat template rejected the conversation: {_one_line(str(exc))}"
            ) from exc
        except Exception as exc:  # a template can fail in any Python way; all are its fault
            raise ChatTemplateError(
                f"the chat template failed to render: {type(exc).__name__}: {_one_line(str(exc))}"
            ) from exc
        images = [image for message in messages for image in message.images]
        return _interleave(text, images)

    def token_counter(
        self, count_prompt: Callable[[Prompt], int],
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Callable[[Sequence[ChatMessage]], int]:
        """A ``count_tokens`` for ``fit_to_budget``: render with this renderer, then count.

        ``count_prompt`` measures a rendered ``Prompt`` (text tokens plus image tokens), e.g.
        the engine's tokenizer-backed counter.
        """
        return lambda messages: count_prompt(self.render(messages, tools=tools))


# ---------------------------------------------------------------------------- text size


def check_text_length(messages: Sequence[ChatMessage], max_chars: int,
                      extra_chars: int = 0) -> None:
    """Refuse text that could never fit, before any of it is tokenized.

    Counts the characters of every text part and tool call of ``messages``, plus
    ``extra_chars`` (e.g. the tools' descriptions): O(number of parts), whatever their
    size, so a 20 MB prompt is refused in microseconds instead of costing seconds of
    tokenizer CPU that other requests need.
    """
    n = extra_chars + sum(
        sum(len(p.text) for p in m.parts if isinstance(p, TextPart))
        + sum(len(c.name) + len(c.arguments) for c in m.tool_calls) for m in messages)
    if n > max_chars:
        raise ContextOverflowError(
            f"the request's text has {n:,} characters, more than the {max_chars:,} this "
            "server accepts per request (--text-chars-per-token x --ctx-size); shorten it")


# ---------------------------------------------------------------------------- sliding window


@dataclass(frozen=True)
class TrimResult:
    """What ``fit_to_budget`` kept, what it dropped, and the kept prompt's token count."""

    messages: tuple[ChatMessage, ...]
    dropped_turns: int
    dropped_images: int
    prompt_tokens: int

    @property
    def trimmed(self) -> bool:
        return self.dropped_turns > 0


def _split(
    messages: tuple[ChatMessage, ...],
) -> tuple[tuple[ChatMessage, ...], list[tuple[ChatMessage, ...]], tuple[ChatMessage, ...]]:
    """(leading system messages, older turns oldest first, newest turn)."""
    n_system = 0
    while n_system < len(messages) and messages[n_system].role == "system":
        n_system += 1
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    if last_user < n_system:
        raise RequestError("the conversation has no user message")
    turns: list[tuple[ChatMessage, ...]] = []
    start = n_system
    for i in range(n_system + 1, last_user + 1):
        if messages[i].role == "user":  # a turn starts at each user message
            turns.append(messages[start:i])
            start = i
    if start < last_user:
        turns.append(messages[start:last_user])
    return messages[:n_system], turns, messages[last_user:]


def fit_to_budget(
    messages: Sequence[ChatMessage],
    budget: int,
    count_tokens: Callable[[Sequence[ChatMessage]], int],
) -> TrimResult:
    """Drop the oldest turns of a conversation until its prompt fits ``budget`` tokens.

    Policy:

    - The system prompt (all leading system messages) and the newest turn (the last user
      message and everything after it) are always kept.
    - A turn is a user message plus the assistant replies that follow it (assistant
      messages before the first user message count as one turn of their own).
    - Whole turns are dropped, oldest first, as few as needed for the prompt to fit.
    - An image in a dropped turn is dropped with it, unless it is the only image in the
      whole conversation: then it is kept, moved to the front of the oldest kept user
      message. (Prepending, rather than inserting an image-only user message, keeps the
      roles alternating, which many chat templates require, invents no message the user
      never sent, and puts the image before a question as Qwen-VL models expect.)
    - If the system prompt and the newest turn alone exceed the budget, the request fails
      with ``ContextOverflowError`` naming both numbers.

    ``count_tokens`` returns the prompt tokens of a message list (images included); build
    it with ``ChatRenderer.token_counter``. The budget is what the prompt may use, i.e. the
    context size minus the tokens reserved for the reply. Counts are assumed to shrink as
    turns are dropped, so the fewest turns to drop is found by bisection: a 30-turn chat
    costs about 7 calls, not 30. The returned prompt's count is always one that was
    measured and found within the budget.
    """
    messages = tuple(messages)
    if not messages:
        raise RequestError("the conversation is empty")
    system, turns, newest = _split(messages)

    all_images = [image for message in messages for image in message.images]
    carried_turn = -1  # index of the turn holding the only image, if it may be dropped
    if len(all_images) == 1:
        carried_turn = next(
            (t for t, turn in enumerate(turns) if any(m.images for m in turn)), -1
        )

    def candidate(k: int) -> tuple[tuple[ChatMessage, ...], int]:
        """The conversation with the ``k`` oldest turns dropped, and the images dropped."""
        kept = [m for turn in turns[k:] for m in turn] + list(newest)
        dropped_images = sum(len(m.images) for turn in turns[:k] for m in turn)
        if 0 <= carried_turn < k:
            # kept[0] is a user message: every turn after the first starts with one, and
            # so does the newest turn.
            kept[0] = replace(kept[0], parts=(ImagePart(all_images[0]), *kept[0].parts))
            dropped_images -= 1
        return system + tuple(kept), dropped_images

    counts: dict[int, int] = {}

    def tokens(k: int) -> int:
        if k not in counts:
            counts[k] = count_tokens(candidate(k)[0])
        return counts[k]

    def result(k: int) -> TrimResult:
        kept, dropped_images = candidate(k)
        return TrimResult(kept, k, dropped_images, tokens(k))

    if tokens(0) <= budget:
        return result(0)
    n_turns = len(turns)
    if tokens(n_turns) > budget:
        raise ContextOverflowError(
            f"the system prompt and the newest turn need {tokens(n_turns)} prompt tokens but "
            f"the budget is {budget}; shorten the message, send fewer or smaller images, "
            "or lower max_tokens"
        )
    fails, fits = 0, n_turns  # invariant: tokens(fails) > budget >= tokens(fits)
    while fits - fails > 1:
        mid = (fails + fits) // 2
        if tokens(mid) <= budget:
            fits = mid
        else:
            fails = mid
    return result(fits)

"""Responses API ``input`` (a string or a list of items) to ``ChatMessage``s.

Items understood: messages (``{"role", "content"}``, with or without
``"type": "message"``; content a string or ``input_text`` / ``input_image`` /
``output_text`` parts), ``function_call`` (a call the model made earlier) and
``function_call_output`` (its result). Consecutive calls join the assistant message
before them, as the chat template expects. Anything else is a 400 naming the item.
"""

from __future__ import annotations

from typing import Any

from vlmserve.chat import ChatMessage, ImagePart, MessagePart, TextPart, ToolCall
from vlmserve.errors import RequestError
from vlmserve.http.image_loader import ImageLoader

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = ("input_text", "output_text", "text")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string")
    return value


async def _parts(content: Any, where: str, images: ImageLoader) -> tuple[MessagePart, ...]:
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of parts")
    parts: list[MessagePart] = []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            text = _text(part.get("text"), f"{where}.content[{n}].text")
            if text:
                parts.append(TextPart(text))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise RequestError(f"{where}.content[{n}]: input_image needs an image_url "
                                   "(a data: URI); file_id is not supported")
            parts.append(ImagePart(await images.load(url)))
        elif kind == "refusal":
            continue
        else:
            raise RequestError(f"{where}.content[{n}] has unsupported type {kind!r}; "
                               "use input_text or input_image")
    return tuple(parts)


async def input_messages(items: str | list[dict[str, Any]],
                         images: ImageLoader) -> list[ChatMessage]:
    """The ``input`` as messages, images decoded (``RequestError`` for a bad item)."""
    if isinstance(items, str):
        if not items:
            raise RequestError("input is empty")
        return [ChatMessage.user(items)]
    if not items:
        raise RequestError("input is empty")
    out: list[ChatMessage] = []
    for n, item in enumerate(items):
        where = f"input[{n}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
            if role is None:
                raise RequestError(f"{where}.role must be user, system, developer or assistant")
            out.append(ChatMessage(role, await _parts(item.get("content"), where, images)))
        elif kind == "function_call":
            call = ToolCall(_text(item.get("call_id"), f"{where}.call_id"),
                            _text(item.get("name"), f"{where}.name"),
                            _text(item.get("arguments", "{}"), f"{where}.arguments"))
            if out and out[-1].role == "assistant":
                last = out.pop()
                out.append(ChatMessage("assistant", last.parts,
                                       tool_calls=(*last.tool_calls, call)))
            else:
                out.append(ChatMessage("assistant", (), tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.get("output")
            parts = await _parts(output, where, images) if isinstance(output, list) else (
                (TextPart(_text(output, f"{where}.output")),))
            out.append(ChatMessage("tool", parts,
                                   tool_call_id=_text(item.get("call_id"), f"{where}.call_id")))
        else:
            raise RequestError(f"{where} has unsupported type {kind!r}; use message, "
                               "function_call or function_call_output")
    return out

"""The model's ``<tool_call>`` output, parsed into OpenAI tool calls as it streams.

``ToolCallParser`` takes text deltas and gives back pieces in order: plain content
(``str``) and parsed calls (``ToolCall``). The non-streamed answer runs the same parser
over the whole text, so streamed and non-streamed answers always agree.

Rules:

* Text that could be the start of ``<tool_call>`` is held back until it is clear.
* A block is a call when its body is a JSON object with a ``name`` the request offered
  and an object of ``arguments`` (a JSON string of one is accepted too). Anything else,
  an unknown name, broken JSON, a block cut off by ``max_tokens``, comes back as plain
  content, tags included: a claimed call that does not parse is never an error.
* Whitespace next to calls is not content (Qwen puts a newline between calls); with no
  call in the answer, the text comes back unchanged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from vlmserve.chat import ToolCall
from vlmserve.http.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

Piece = str | ToolCall


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_call(body: str, names: frozenset[str],
               make_id: Callable[[], str] = new_call_id) -> ToolCall | None:
    """One ``<tool_call>`` body as a ``ToolCall``, or ``None`` when it is not a valid call."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) - {"name", "arguments"}:
        return None
    name, arguments = data.get("name"), data.get("arguments", {})
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(make_id(), name, json.dumps(arguments, ensure_ascii=False))


def _open_prefix_len(text: str) -> int:
    """Length of the longest end of ``text`` that begins ``<tool_call>``."""
    for n in range(min(len(text), len(TOOL_CALL_OPEN) - 1), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-n:]):
            return n
    return 0


class ToolCallParser:
    """Incremental ``<tool_call>`` parser for one answer (see the module doc)."""

    def __init__(self, names: frozenset[str], make_id: Callable[[], str] = new_call_id) -> None:
        self._names = names
        self._make_id = make_id
        self._buffer = ""  # text not yet given out
        self._in_call = False  # inside <tool_call>...; the buffer holds the body so far
        self._blank = ""  # whitespace held back: content only if more content follows
        self._after_call = False  # a call was the last thing given out
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> list[Piece]:
        """The pieces that ``text`` completes (often none while a call is open)."""
        self._buffer += text
        out: list[Piece] = []
        while True:
            if self._in_call:
                end = self._buffer.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return out
                body, self._buffer = self._buffer[:end], self._buffer[end + len(TOOL_CALL_CLOSE):]
                self._in_call = False
                call = parse_call(body, self._names, self._make_id)
                if call is None:
                    self._content(TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE, out)
                else:
                    self._blank, self._after_call = "", True
                    self.calls.append(call)
                    out.append(call)
                continue
            start = self._buffer.find(TOOL_CALL_OPEN)
            if start < 0:
                keep = _open_prefix_len(self._buffer)
                cut = len(self._buffer) - keep
                self._content(self._buffer[:cut], out)
                self._buffer = self._buffer[cut:]
                return out
            self._content(self._buffer[:start], out)
            self._buffer = self._buffer[start + len(TOOL_CALL_OPEN):]
            self._in_call = True

    def finish(self) -> list[Piece]:
        """The end of the answer: what is still held (an unclosed call is content)."""
        out: list[Piece] = []
        rest = (TOOL_CALL_OPEN if self._in_call else "") + self._buffer
        self._buffer, self._in_call = "", False
        self._content(rest, out)
        if self._blank and not self.calls:
            out.append(self._blank)
        self._blank = ""
        return out

    def _content(self, text: str, out: list[Piece]) -> None:
        if self._after_call:  # the newline after a call is not content either
            text = text.lstrip()
        if not text:
            return
        self._after_call = False
        text = self._blank + text
        body = text.rstrip()
        self._blank = text[len(body):]
        if body:
            out.append(body)


def split_answer(text: str, names: frozenset[str],
                 make_id: Callable[[], str] = new_call_id) -> tuple[str | None, list[ToolCall]]:
    """A whole answer as (content or ``None`` when it is only calls, calls)."""
    parser = ToolCallParser(names, make_id)
    pieces = parser.feed(text) + parser.finish()
    content = "".join(p for p in pieces if isinstance(p, str))
    if parser.calls and not content.strip():
        return None, parser.calls
    return content, parser.calls

"""A Responses API answer: output items, the stream events that build them, the object.

``ResponseOutput`` takes the answer's pieces in order (text, parsed ``ToolCall``s, as
``tool_calls.ToolCallParser`` gives them) and returns, for each, the streaming events
that announce it; ``items`` is the finished ``output`` list. The non-streamed answer
feeds the same pieces and keeps only ``items``, so both forms carry the same output.

Text opens a ``message`` item (``response.output_item.added``, ``content_part.added``,
then ``output_text.delta`` events); a call closes it (``output_text.done``,
``content_part.done``, ``output_item.done``) and is one ``function_call`` item with its
arguments in one ``function_call_arguments.delta``.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from vlmserve.chat import ToolCall
from vlmserve.http.tool_calls import Piece
from vlmserve.types import RequestStats

Event = dict[str, Any]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class ResponseOutput:
    """The output items of one answer, built piece by piece (see the module doc)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None  # the open message item

    @property
    def text(self) -> str:
        """All output text (what the SDK's ``output_text`` shows)."""
        return "".join(part["text"] for item in self.items if item["type"] == "message"
                       for part in item["content"])

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(item["call_id"], item["name"], item["arguments"])
                     for item in self.items if item["type"] == "function_call")

    def add(self, piece: Piece) -> list[Event]:
        if isinstance(piece, str):
            return self._add_text(piece) if piece else []
        events = self._close_message()
        item = {"type": "function_call", "id": _new_id("fc"), "call_id": piece.id,
                "name": piece.name, "arguments": "", "status": "in_progress"}
        index = len(self.items)
        self.items.append(item)
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": copy.deepcopy(item)})
        item["arguments"], item["status"] = piece.arguments, "completed"
        events.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                       "output_index": index, "delta": piece.arguments})
        events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                       "output_index": index, "name": piece.name, "arguments": piece.arguments})
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": copy.deepcopy(item)})
        return events

    def finish(self) -> list[Event]:
        """The answer ended: close the open message."""
        return self._close_message()

    def _add_text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._message is None:
            self._message = {"type": "message", "id": _new_id("msg"), "status": "in_progress",
                             "role": "assistant", "content": []}
            self.items.append(self._message)
            events.append({"type": "response.output_item.added",
                           "output_index": len(self.items) - 1,
                           "item": copy.deepcopy(self._message)})
            part = {"type": "output_text", "text": "", "annotations": []}
            self._message["content"].append(part)
            events.append({**self._where(), "type": "response.content_part.added",
                           "part": copy.deepcopy(part)})
        self._message["content"][0]["text"] += text
        events.append({**self._where(), "type": "response.output_text.delta", "delta": text,
                       "logprobs": []})
        return events

    def _where(self) -> Event:
        assert self._message is not None
        return {"item_id": self._message["id"], "output_index": self.items.index(self._message),
                "content_index": 0}

    def _close_message(self) -> list[Event]:
        if self._message is None:
            return []
        where, part = self._where(), self._message["content"][0]
        self._message["status"] = "completed"
        events = [
            {**where, "type": "response.output_text.done", "text": part["text"], "logprobs": []},
            {**where, "type": "response.content_part.done", "part": copy.deepcopy(part)},
            {"type": "response.output_item.done", "output_index": where["output_index"],
             "item": copy.deepcopy(self._message)},
        ]
        self._message = None
        return events


def usage(stats: RequestStats) -> dict[str, Any]:
    """The Responses API's usage block (input / output tokens, cached input tokens)."""
    return {
        "input_tokens": stats.prompt_tokens,
        "input_tokens_details": {"cached_tokens": stats.cached_tokens},
        "output_tokens": stats.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }

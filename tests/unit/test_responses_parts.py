"""The Responses API's pieces without a server: input items, output items and events,
the stored-response store."""

from __future__ import annotations

import asyncio

import pytest

from vlmserve.chat import ToolCall
from vlmserve.errors import RequestError
from vlmserve.http.response_store import ResponseStore
from vlmserve.http.responses_input import input_messages
from vlmserve.http.responses_output import ResponseOutput


class NoImages:
    async def load(self, url: str):  # pragma: no cover - never called here
        raise AssertionError("no images in these tests")


def messages(items):
    return asyncio.run(input_messages(items, NoImages()))  # type: ignore[arg-type]


def test_items_become_chat_messages() -> None:
    out = messages([
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "let me look"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a": 1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "r1"},
    ])
    assert [m.role for m in out] == ["system", "user", "assistant", "tool"]
    assert out[2].text == "let me look"
    assert out[2].tool_calls == (ToolCall("c1", "f", "{}"), ToolCall("c2", "g", '{"a": 1}'))
    assert out[3].text == "r1" and out[3].tool_call_id == "c1"
    assert messages("hello")[0].text == "hello"


@pytest.mark.parametrize("items, fragment", [
    ("", "input is empty"), ([], "input is empty"),
    ([{"type": "reasoning"}], "unsupported type 'reasoning'"),
    ([{"role": "tool", "content": "x"}], "role must be"),
    ([{"role": "user", "content": [{"type": "input_audio"}]}], "unsupported type"),
    ([{"role": "user", "content": 5}], "string or a list"),
    ([{"type": "function_call", "name": "f"}], "call_id must be a string"),
])
def test_bad_items(items, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment):
        messages(items)


def test_output_items_and_events() -> None:
    output = ResponseOutput()
    events = output.add("Hel") + output.add("lo") + output.add(ToolCall("call_1", "f", "{}"))
    events += output.add("bye") + output.finish()
    types = [e["type"] for e in events]
    assert types == [
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
    ]
    assert [i["type"] for i in output.items] == ["message", "function_call", "message"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [
        0, 1, 2]
    assert output.text == "Hellobye"
    assert output.calls == (ToolCall("call_1", "f", "{}"),)
    # Events are snapshots: the "added" item was empty, the "done" one is complete.
    assert events[0]["item"]["content"] == [] and events[6]["item"]["status"] == "completed"


def test_response_store_expires_and_caps() -> None:
    now = [0.0]
    store = ResponseStore(ttl_s=10, max_items=2, clock=lambda: now[0])
    for n in range(3):
        store.put({"id": f"r{n}"})
    assert store.get("r0") is None and store.get("r1") == {"id": "r1"}
    now[0] = 11
    assert store.get("r2") is None
    store.put({"id": "r3"})
    assert store.delete("r3") and not store.delete("r3")

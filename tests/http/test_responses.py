"""``/v1/responses`` through the ``openai`` SDK's ``client.responses``, on a live server.

Invariants that hold for a random-weight model: text and images in, streamed events that
add up to the plain answer, a second turn through ``previous_response_id`` that reuses
the first turn's KV (cached tokens > 0), a JSON-schema format that parses, function
tools, and OpenAI-shaped errors.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from live_server import LiveServer, png_data_uri

IMAGE = png_data_uri(64, 64)


def image_input(text: str = "请用中文描述这张图片") -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_image", "image_url": IMAGE},
                                         {"type": "input_text", "text": text}]}]


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--parallel", "2", "--ctx-size", "4096")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


def test_text_input(client: openai.OpenAI) -> None:
    response = client.responses.create(model="m", input="Hello", max_output_tokens=6,
                                       temperature=0, instructions="Be brief.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.output_tokens <= 6
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)
    assert response.instructions == "Be brief."
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"


def test_image_streamed_equals_plain(client: openai.OpenAI) -> None:
    params = dict(model="m", input=image_input(), max_output_tokens=12, temperature=0)
    plain = client.responses.create(**params)
    events = list(client.responses.create(**params, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    for name in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert name in types, name
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1].response
    assert deltas == done.text == final.output_text == plain.output_text
    assert final.status == plain.status
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert plain.x_vlmserve["images"] == final.x_vlmserve["images"] == 1


def test_previous_response_id_reuses_the_kv_prefix(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input=image_input(), max_output_tokens=8,
                                    temperature=0)
    second = client.responses.create(model="m", input="And the colours?",
                                     previous_response_id=first.id, max_output_tokens=8,
                                     temperature=0)
    assert second.previous_response_id == first.id
    # The whole first turn, its image included, is in front of the new question ...
    assert second.usage.input_tokens > first.usage.input_tokens
    # ... and it was served from the slot's KV cache, not prefilled again.
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 2
    # Streamed continuations work the same way.
    events = list(client.responses.create(model="m", input="More?", stream=True,
                                          previous_response_id=second.id,
                                          max_output_tokens=4, temperature=0))
    third = events[-1].response
    assert third.usage.input_tokens > second.usage.input_tokens
    assert third.usage.input_tokens_details.cached_tokens > first.usage.input_tokens


def test_store_false_cannot_be_continued(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="Hi", max_output_tokens=2, store=False)
    assert first.store is False
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="m", input="Again", previous_response_id=first.id,
                                max_output_tokens=2)
    assert info.value.response.json()["error"]["code"] == "previous_response_not_found"


def test_json_schema_format_parses(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 10},
                                               "count": {"type": "integer"}},
              "required": ["colour", "count"], "additionalProperties": False}
    response = client.responses.create(
        model="m", input=image_input("What colour?"), max_output_tokens=200, temperature=1.0,
        extra_body={"seed": 3}, text={"format": {"type": "json_schema", "name": "answer", "schema": schema}})
    assert response.status == "completed"
    answer = json.loads(response.output_text)
    assert set(answer) == {"colour", "count"} and isinstance(answer["count"], int)


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def test_function_tool_loop(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input=image_input("Weather here?"),
                                    tools=[WEATHER], tool_choice="required",
                                    parallel_tool_calls=False, max_output_tokens=200,
                                    temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert set(json.loads(calls[0].arguments)) == {"city"}
    assert calls[0].call_id.startswith("call_") and calls[0].id.startswith("fc_")
    # The result goes back through previous_response_id, as the SDK's docs show.
    second = client.responses.create(
        model="m", previous_response_id=first.id, tools=[WEATHER], max_output_tokens=6,
        temperature=0, tool_choice="none",
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "sunny"}])
    assert second.status in ("completed", "incomplete") and second.output_text
    # Or the whole history as items, without storage.
    third = client.responses.create(
        model="m", tools=[WEATHER], max_output_tokens=6, temperature=0, store=False,
        input=[*image_input("Weather here?"),
               {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "sunny"}])
    assert third.output


def test_streamed_function_call_events(client: openai.OpenAI) -> None:
    params = dict(model="m", input="Weather in Paris?", tools=[WEATHER], temperature=0,
                  tool_choice={"type": "function", "name": "get_weather"},
                  max_output_tokens=200)
    plain = client.responses.create(**params)
    events = list(client.responses.create(**params, stream=True))
    arguments = "".join(e.delta for e in events
                        if e.type == "response.function_call_arguments.delta")
    plain_call = next(item for item in plain.output if item.type == "function_call")
    assert arguments == plain_call.arguments
    final_call = next(item for item in events[-1].response.output
                      if item.type == "function_call")
    assert (final_call.name, final_call.arguments) == (plain_call.name, plain_call.arguments)


@pytest.mark.parametrize("body, fragment", [
    ({"input": []}, "input is empty"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "unsupported type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "unsupported type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "file_id is not supported"),
    ({"input": "x", "temperature": 5}, "temperature"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
])
def test_bad_requests_are_400(server: LiveServer, body: dict, fragment: str) -> None:
    response = httpx.post(f"{server.url}/v1/responses", json={"model": "m", **body})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_retrieve_and_delete_a_stored_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="Hi", max_output_tokens=3, temperature=0)
    again = client.responses.retrieve(first.id)
    assert (again.id, again.output_text, again.usage.input_tokens) == (
        first.id, first.output_text, first.usage.input_tokens)
    deleted = client.responses.delete(first.id)
    assert deleted is None  # the SDK returns nothing for a 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):  # its conversation went with it
        client.responses.create(model="m", input="x", previous_response_id=first.id,
                                max_output_tokens=2)
    unstored = client.responses.create(model="m", input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)

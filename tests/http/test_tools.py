"""Tool calls in ``/v1/chat/completions`` through the ``openai`` SDK, on a live server.

The demo model has random weights, so what it says is noise; what is tested holds for any
model: a forced call (``required`` or named) parses into a valid call every time because a
grammar constrains it, streamed tool-call deltas reassemble to the non-streamed call, a
call -> result -> answer loop runs with an image in the first turn, and bad tool input is
an OpenAI-shaped 400.
"""

from __future__ import annotations

import json

import openai
import pytest

from live_server import LiveServer, png_data_uri

IMAGE = png_data_uri(64, 64)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12},
                           "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
ZOOM = {
    "type": "function",
    "function": {
        "name": "zoom",
        "description": "Crop the picture",
        "parameters": {
            "type": "object",
            "properties": {"box": {"type": "array", "items": {"type": "integer"},
                                   "minItems": 4, "maxItems": 4}},
            "required": ["box"],
        },
    },
}
TOOLS = [WEATHER, ZOOM]


def user_turn(text: str = "What is the weather in Paris?", image: bool = True) -> dict:
    content: list[dict] = [{"type": "image_url", "image_url": {"url": IMAGE}}] if image else []
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--parallel", "2", "--ctx-size", "4096")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


def check_call(call, tools=TOOLS) -> dict:
    """A call is well formed: an id, a name from ``tools``, arguments of its schema."""
    assert call.type == "function" and call.id.startswith("call_")
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.function.name in by_name
    arguments = json.loads(call.function.arguments)
    schema = by_name[call.function.name]
    assert set(arguments) == set(schema["required"])
    if call.function.name == "get_weather":
        # Not its length: llama.cpp's grammar admits a byte that is no UTF-8 on its own,
        # and a random model emits such bytes; each comes back as one U+FFFD.
        assert isinstance(arguments["city"], str)
        assert isinstance(arguments["days"], int)
    else:
        assert len(arguments["box"]) == 4 and all(isinstance(v, int) for v in arguments["box"])
    return arguments


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_named_choice_always_parses(client: openai.OpenAI, seed: int) -> None:
    answer = client.chat.completions.create(
        model="m", messages=[user_turn()], tools=TOOLS, max_tokens=200, seed=seed,
        temperature=1.0, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    check_call(choice.message.tool_calls[0])


@pytest.mark.parametrize("parallel", [True, False])
def test_required_choice_always_parses(client: openai.OpenAI, parallel: bool) -> None:
    for seed in (4, 5):
        answer = client.chat.completions.create(
            model="m", messages=[user_turn()], tools=TOOLS, tool_choice="required",
            parallel_tool_calls=parallel, max_tokens=1000, seed=seed, temperature=1.0)
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        calls = choice.message.tool_calls
        assert calls and (parallel or len(calls) == 1)
        for call in calls:
            check_call(call)
        assert len({c.id for c in calls}) == len(calls)


def reassemble(chunks) -> tuple[str, list[dict], str | None]:
    """Content, calls and finish reason from streamed chunks, as SDK users accumulate them."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            if piece.id:
                assert call["id"] is None, "a call's id comes once"
                call["id"] = piece.id
            if piece.function and piece.function.name:
                call["name"] += piece.function.name
            if piece.function and piece.function.arguments:
                call["arguments"] += piece.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def test_streamed_call_deltas_reassemble_to_the_plain_call(client: openai.OpenAI) -> None:
    params = dict(model="m", messages=[user_turn()], tools=TOOLS, tool_choice="required",
                  max_tokens=400, temperature=0)
    plain = client.chat.completions.create(**params).choices[0]
    content, calls, finish = reassemble(client.chat.completions.create(**params, stream=True))
    assert finish == plain.finish_reason == "tool_calls"
    assert content == (plain.message.content or "")
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in plain.message.tool_calls]
    assert all(c["id"].startswith("call_") for c in calls)


def test_auto_choice_streamed_equals_plain(client: openai.OpenAI) -> None:
    # Whatever the random model says (text, calls or a broken call), both forms agree and
    # nothing fails: a claimed call that does not parse is plain content.
    params = dict(model="m", messages=[user_turn()], tools=TOOLS, max_tokens=40, temperature=0)
    plain = client.chat.completions.create(**params).choices[0]
    content, calls, finish = reassemble(client.chat.completions.create(**params, stream=True))
    assert finish == plain.finish_reason
    assert content == (plain.message.content or "")
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in plain.message.tool_calls or []]


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=[user_turn()], tools=TOOLS,
                                            tool_choice="none", max_tokens=8, temperature=0)
    plain = client.chat.completions.create(model="m", messages=[user_turn()], max_tokens=8,
                                           temperature=0)
    # "none" leaves the tools out of the prompt: the same prompt as no tools at all.
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content == plain.choices[0].message.content
    assert answer.usage.prompt_tokens == plain.usage.prompt_tokens


def test_tools_are_rendered_into_the_prompt(client: openai.OpenAI) -> None:
    without = client.chat.completions.create(model="m", messages=[user_turn()], max_tokens=1)
    with_tools = client.chat.completions.create(model="m", messages=[user_turn()], tools=TOOLS,
                                                max_tokens=1)
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 50


def test_call_result_answer_loop_with_an_image(client: openai.OpenAI) -> None:
    messages = [user_turn("Zoom into the red part, then tell me what it is.")]
    first = client.chat.completions.create(
        model="m", messages=messages, tools=TOOLS, max_tokens=200, temperature=0,
        tool_choice={"type": "function", "function": {"name": "zoom"}})
    call = first.choices[0].message.tool_calls[0]
    check_call(call)
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    # The tool's result is a picture (a GUI agent's screenshot): allowed in tool messages.
    messages.append({"role": "tool", "tool_call_id": call.id, "content": [
        {"type": "text", "text": "the zoomed picture:"},
        {"type": "image_url", "image_url": {"url": png_data_uri(32, 32, (0, 200, 0))}}]})
    second = client.chat.completions.create(model="m", messages=messages, tools=TOOLS,
                                            max_tokens=8, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    # The first turn (tools, image, question) is the same prefix: its KV is reused.
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2


def test_session_keeps_the_tool_call(client: openai.OpenAI) -> None:
    session = {"session_id": "tools-session-1"}
    first = client.chat.completions.create(
        model="m", messages=[user_turn()], tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, max_tokens=200, temperature=0, extra_body=session)
    call = first.choices[0].message.tool_calls[0]
    second = client.chat.completions.create(
        model="m", tools=TOOLS, max_tokens=4, temperature=0, extra_body=session,
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
    # The stored history (image, call) came first and its KV was reused.
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2


@pytest.mark.parametrize("extra, fragment", [
    ({"tool_choice": "required"}, "tool_choice needs tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "not in tools"),
    ({"tools": [WEATHER, WEATHER]}, "given twice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "must be 1-64"),
    ({"tools": [{"type": "retrieval"}]}, "tools"),
    ({"tools": TOOLS, "tool_choice": "required",
      "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tool_requests_are_400(client: openai.OpenAI, extra: dict, fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[user_turn(image=False)],
                                       max_tokens=4, **extra)
    error = info.value.response.json()["error"]
    assert fragment in error["message"]


def test_image_in_assistant_message_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", max_tokens=4, messages=[
            user_turn(image=False),
            {"role": "assistant", "content": [{"type": "image_url",
                                               "image_url": {"url": IMAGE}}]},
            user_turn(image=False)])
    assert "only user and tool messages" in info.value.response.json()["error"]["message"]


def test_sdk_stream_helper_accumulates_the_call(client: openai.OpenAI) -> None:
    # The SDK's own accumulator (client.chat.completions.stream) ends with the same call.
    params = dict(model="m", messages=[user_turn()], tools=TOOLS, max_tokens=200,
                  temperature=0, tool_choice={"type": "function", "function": {"name": "zoom"}})
    plain = client.chat.completions.create(**params).choices[0].message.tool_calls[0]
    with client.chat.completions.stream(**params) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls"
    call = final.message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == (plain.function.name,
                                                             plain.function.arguments)

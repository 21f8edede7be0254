"""Penalties over the API: applied (a seeded answer changes), range-checked (400)."""

from __future__ import annotations

import openai
import pytest

from live_server import LiveServer


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--parallel", "1", "--no-ui")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


def ask(client, **params) -> str:
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "tell me a story"}], max_tokens=48,
        temperature=1.0, top_p=1.0, seed=99, extra_body={"top_k": 0}, **params)
    return answer.choices[0].message.content


def test_seeded_request_with_penalties_samples_differently(client):
    plain = ask(client, presence_penalty=0.0)
    assert ask(client, presence_penalty=0.0) == plain
    assert ask(client, presence_penalty=2.0, frequency_penalty=2.0) != plain
    assert ask(client) != plain  # the default: Qwen's presence_penalty 1.5


@pytest.mark.parametrize("params", [{"presence_penalty": 2.5}, {"frequency_penalty": -3},
                                    {"presence_penalty": "lots"}])
def test_out_of_range_penalties_are_400(client, params):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, **params)
    assert info.value.response.json()["error"]["param"] == next(iter(params))

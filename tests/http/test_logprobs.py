"""``logprobs`` / ``top_logprobs`` in chat completions through the ``openai`` SDK.

With greedy decoding the sampled token is the model's most likely one, so each token's
first top entry is that token with the same logprob, whatever the (random) weights.
"""

from __future__ import annotations

import math

import openai
import pytest

from live_server import LiveServer, png_data_uri

MESSAGES = [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": png_data_uri(64, 64)}},
    {"type": "text", "text": "Describe it."}]}]


@pytest.fixture(scope="module")
def client(start_server) -> openai.OpenAI:
    server: LiveServer = start_server("--parallel", "2", "--ctx-size", "2048")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


def test_top_logprob_is_the_greedy_token(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10,
                                            temperature=0, logprobs=True, top_logprobs=5)
    choice = answer.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == answer.usage.completion_tokens - (choice.finish_reason == "stop")
    # The tokens' bytes make the answer (a token's own text shows a split character as
    # U+FFFD; joined, the bytes decode to the streamed text).
    joined = b"".join(bytes(e.bytes) for e in entries)
    assert joined.decode("utf-8", "replace") == choice.message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 5
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6


def test_streamed_logprobs_equal_plain(client: openai.OpenAI) -> None:
    params = dict(model="m", messages=MESSAGES, max_tokens=10, temperature=0, logprobs=True,
                  top_logprobs=2)
    plain = client.chat.completions.create(**params).choices[0].logprobs.content
    streamed = [entry for chunk in client.chat.completions.create(**params, stream=True)
                if chunk.choices and chunk.choices[0].logprobs
                for entry in chunk.choices[0].logprobs.content]
    assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in plain]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in plain])


def test_logprobs_off_and_bad_values(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)
    assert answer.choices[0].logprobs is None
    for extra in ({"logprobs": True, "top_logprobs": 21}, {"top_logprobs": 2}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2, **extra)
        assert "top_logprobs" in info.value.response.json()["error"]["message"]

"""Opt-in progress chunks before the first token, through the real ``openai`` SDK.

``stream_options.x_vlmserve_progress`` asks for ``x_vlmserve.progress`` chunks (no
choices) while the request is queued, its picture encoded and its prompt read; without
it a stream is exactly OpenAI's, chunk for chunk.
"""

from __future__ import annotations

import openai
import pytest

from live_server import LiveServer, png_data_uri


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--parallel", "1")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="anything", max_retries=0,
                         timeout=60)


def ask(client: openai.OpenAI, color: tuple[int, int, int], **stream_options) -> list:
    message = {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_data_uri(320, 320, color)}},
        {"type": "text", "text": "这是什么？"}]}
    return list(client.chat.completions.create(
        model="qwen3-vl", messages=[message], max_tokens=8, temperature=0, stream=True,
        stream_options=stream_options or None))


def progress_of(chunk) -> dict | None:
    extension = getattr(chunk, "x_vlmserve", None)
    return extension.get("progress") if isinstance(extension, dict) else None


def test_a_client_that_asks_hears_each_phase_before_the_first_token(client) -> None:
    chunks = ask(client, (10, 200, 30), x_vlmserve_progress=True)
    progress = [(i, progress_of(c)) for i, c in enumerate(chunks) if progress_of(c)]
    phases = [p["phase"] for _, p in progress]
    assert phases == ["encoding", "prefill"]  # a new picture: encoder, then the prompt
    assert all(not chunks[i].choices for i, _ in progress)  # no choices: SDKs skip them
    elapsed = [p["elapsed_ms"] for _, p in progress]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    first_text = next(i for i, c in enumerate(chunks)
                      if c.choices and c.choices[0].delta.content)
    assert max(i for i, _ in progress) < first_text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_plain_clients_see_nothing_new_and_the_answer_is_the_same(client) -> None:
    asked = ask(client, (200, 10, 90), x_vlmserve_progress=True)
    plain = ask(client, (200, 10, 90))  # the same picture, now cached: same tokens
    assert not any(progress_of(c) for c in plain)
    assert all(c.choices for c in plain)  # every chunk is an OpenAI choice chunk
    assert plain[0].choices[0].delta.role == "assistant"

    def text(chunks: list) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text(plain) == text(asked)
    assert len(plain) == len(asked) - sum(1 for c in asked if progress_of(c))


def test_a_cached_picture_skips_the_encoding_phase(client) -> None:
    ask(client, (90, 90, 250))
    again = ask(client, (90, 90, 250), x_vlmserve_progress=True)
    assert [progress_of(c)["phase"] for c in again if progress_of(c)] == ["prefill"]

"""Batching, the image cache and KV prefix reuse give exactly the tokens of the plain path.

Greedy decoding through the real llama.cpp. The reference is an engine with one
slot and every cache off, running each request alone from an empty KV.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import png_bytes
from tests.engine.conftest import image_prompt, make_engine, run, token_ids
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.images import prepare_image
from vlmserve.types import Prompt, Request, SamplingParams

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def plain(tiny_model):
    client = make_engine(tiny_model, n_parallel=1, image_cache_mb=0, prefix_cache=False)
    yield client
    client.close()


def alone(plain, prompt: Prompt, rid: str, max_tokens: int = MAX_TOKENS) -> list[int]:
    deltas, end = run(plain, prompt, max_tokens=max_tokens, request_id=rid)
    assert end.stats.cached_tokens == 0 and end.stats.image_cache_hits == 0
    return token_ids(deltas)


def test_concurrent_requests_match_running_alone(engine, plain):
    prompts = [image_prompt(engine, q, 256 + 64 * i, 256, seed=i)
               for i, q in enumerate(["请用中文描述这张图片", "What is here?",
                                      "List the objects.", "Read the text."])]
    expected = [alone(plain, p, f"alone{i}") for i, p in enumerate(prompts)]
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(len(prompts))

    def worker(i: int) -> None:
        barrier.wait()
        deltas, _ = run(engine, prompts[i], max_tokens=MAX_TOKENS, request_id=f"batch{i}")
        results[i] = token_ids(deltas)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    before = engine.snapshot().counters.max_batch_tokens
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results[i] for i in range(len(prompts))] == expected
    # they really were decoded together: some step carried several sequences
    assert engine.snapshot().counters.max_batch_tokens >= max(before, 2)


def test_same_image_new_question_matches_no_cache(engine, plain):
    first = image_prompt(engine, "Describe this image in detail.", 384, 256, seed=5)
    second = image_prompt(engine, "请用中文描述这张图片", 384, 256, seed=5)  # same picture
    run(engine, first, max_tokens=4, request_id="warm")
    deltas, end = run(engine, second, max_tokens=MAX_TOKENS, request_id="second")
    # the question comes after the image, so the image itself is served from a slot's KV
    assert end.stats.cached_tokens >= end.stats.image_tokens > 0
    assert end.stats.image_encode_ms == 0
    assert token_ids(deltas) == alone(plain, second, "nocache")


def test_image_cache_hit_without_prefix_reuse(tiny_model, plain):
    client = make_engine(tiny_model, n_parallel=2, prefix_cache=False)
    try:
        prompt = image_prompt(client, "What is here?", 320, 320, seed=6)
        run(client, prompt, max_tokens=2, request_id="fill")
        deltas, end = run(client, prompt, max_tokens=MAX_TOKENS, request_id="hit")
        assert end.stats.image_cache_hits == 1 and end.stats.image_encode_ms == 0
        assert end.stats.cached_tokens == 0
        assert token_ids(deltas) == alone(plain, prompt, "ref")
    finally:
        client.close()


def test_follow_up_turn_reuses_the_prefix_and_matches_from_scratch(engine, plain):
    renderer = ChatRenderer(engine.info.chat_template)
    image = prepare_image(png_bytes(448, 320, seed=7))
    turn1 = [ChatMessage.user("请用中文描述这张图片", image)]
    deltas, _ = run(engine, renderer.render(turn1), max_tokens=MAX_TOKENS, request_id="t1")
    answer = "".join(d.text for d in deltas)
    turn2 = [*turn1, ChatMessage.assistant(answer), ChatMessage.user("图片里有什么颜色？")]
    prompt2 = renderer.render(turn2)
    deltas2, end2 = run(engine, prompt2, max_tokens=MAX_TOKENS, request_id="t2")
    # the whole first turn (image included) came from the slot's KV
    assert end2.stats.cached_tokens >= end2.stats.image_tokens
    assert end2.stats.cached_tokens > end2.stats.prompt_tokens // 2
    assert token_ids(deltas2) == alone(plain, prompt2, "scratch")


def test_inline_vision_matches_the_vision_worker(tiny_model, plain):
    client = make_engine(tiny_model, n_parallel=1, image_cache_mb=0, prefix_cache=False,
                         vision_worker=False)
    try:
        prompt = image_prompt(client, "请用中文描述这张图片", 320, 256, seed=8)
        deltas, _ = run(client, prompt, max_tokens=MAX_TOKENS, request_id="inline")
        assert token_ids(deltas) == alone(plain, prompt, "worker")
    finally:
        client.close()


@pytest.mark.parametrize("image_slice", [7, 64])
def test_an_image_sliced_between_decode_steps_matches_one_call(tiny_model, plain, image_slice):
    """A newcomer's image goes in slices while another stream decodes: same tokens, both."""
    client = make_engine(tiny_model, n_parallel=2, image_slice=image_slice)
    try:
        stream = image_prompt(client, "Tell a long story.", 256, 256, seed=9)
        newcomer = image_prompt(client, "What is here?", 384, 320, seed=10)
        streamed: list[int] = []
        done = threading.Event()

        def stream_worker() -> None:  # decodes until the newcomer is done, then leaves
            params = SamplingParams(max_tokens=3000, temperature=0.0)
            for delta in client.generate_sync(Request("stream", stream, params)):
                streamed.extend(delta.token_ids)
                if done.is_set():
                    break

        t = threading.Thread(target=stream_worker)
        t.start()
        while len(streamed) < 3:  # the stream is decoding
            time.sleep(0.001)
        slices_before = client.snapshot().counters.image_slices
        deltas, end = run(client, newcomer, max_tokens=MAX_TOKENS, request_id="newcomer")
        slices = client.snapshot().counters.image_slices - slices_before
        done.set()
        t.join(120)
        assert slices >= end.stats.image_tokens // image_slice  # it really went in slices
        assert token_ids(deltas) == alone(plain, newcomer, "whole")
        assert streamed == alone(plain, stream, "stream-alone", max_tokens=len(streamed))
    finally:
        client.close()

"""Generation through the real llama.cpp on the tiny Qwen3-VL model."""

from __future__ import annotations

from tests.conftest import png_bytes
from tests.engine.conftest import image_prompt, run, token_ids
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.images import prepare_image
from vlmserve.types import FinishReason, Prompt, Request, SamplingParams


def test_greedy_is_deterministic(engine):
    prompt = image_prompt(engine, "请用中文描述这张图片", 320, 240)
    first, end1 = run(engine, prompt, max_tokens=24, request_id="a")
    second, end2 = run(engine, prompt, max_tokens=24, request_id="b")
    assert token_ids(first) == token_ids(second)
    assert "".join(d.text for d in first) == "".join(d.text for d in second)
    assert end1.finish_reason is FinishReason.LENGTH
    assert end1.stats.completion_tokens == 24


def test_seeded_sampling_is_reproducible_and_seed_matters(engine):
    prompt = image_prompt(engine, "Describe this image in detail.")
    a, _ = run(engine, prompt, max_tokens=24, request_id="s1", temperature=1.0, seed=7,
               top_k=0, top_p=1.0)
    b, _ = run(engine, prompt, max_tokens=24, request_id="s2", temperature=1.0, seed=7,
               top_k=0, top_p=1.0)
    c, _ = run(engine, prompt, max_tokens=24, request_id="s3", temperature=1.0, seed=8,
               top_k=0, top_p=1.0)
    assert token_ids(a) == token_ids(b)
    assert token_ids(a) != token_ids(c)


def test_image_token_counts_follow_the_qwen3vl_rule(engine):
    # patch 16, 2x2 merge: one token per 32x32 block
    for (w, h), expected in (((768, 768), 576), ((1024, 512), 512)):
        prompt = image_prompt(engine, "describe", w, h)
        _, end = run(engine, prompt, max_tokens=1, request_id=f"img{w}")
        assert end.stats.image_tokens == expected == engine.image_tokens(w, h)
        # the client's estimate (used by the sliding window) is exact
        assert engine.count_prompt_tokens(prompt) == end.stats.prompt_tokens


def test_stream_deltas_are_whole_characters(engine):
    prompt = image_prompt(engine, "请用中文描述这张图片", seed=3)
    deltas, end = run(engine, prompt, max_tokens=64, request_id="utf8")
    texts = [d.text for d in deltas]
    for text in texts:
        text.encode("utf-8")  # a str holding half a character (lone surrogate) would raise
    joined = "".join(texts)
    assert joined, "the random model should produce some text"
    # every emitted id was counted; text is what those ids decode to as a whole
    assert len(token_ids(deltas)) == end.stats.completion_tokens


def test_stop_string_ends_generation_before_it(engine):
    prompt = image_prompt(engine, "describe", seed=1)
    deltas, _ = run(engine, prompt, max_tokens=32, request_id="full")
    full = "".join(d.text for d in deltas)
    stop = full[6:9]
    assert stop
    deltas, end = run(engine, prompt, max_tokens=32, request_id="stop", stop=(stop,))
    text = "".join(d.text for d in deltas)
    assert end.finish_reason is FinishReason.STOP
    assert text == full[: full.index(stop)]


def test_text_only_prompt(engine):
    renderer = ChatRenderer(engine.info.chat_template)
    prompt = renderer.render([ChatMessage.user("hello there")])
    deltas, end = run(engine, prompt, max_tokens=8, request_id="text")
    assert end.stats.image_tokens == 0 and end.stats.completion_tokens == 8
    assert end.stats.ttft_ms > 0 and end.stats.decode_tokens_per_s > 0


def test_prompt_too_long_for_a_slot_is_refused(engine):
    image = prepare_image(png_bytes(1024, 1024))
    many = tuple(x for _ in range(5) for x in ("look: ", image))  # 5 x 1024 image tokens
    prompt = Prompt((*many, "<|im_start|>assistant\n"))
    deltas = list(engine.generate_sync(Request("long", prompt, SamplingParams(max_tokens=4))))
    assert deltas[-1].finish_reason is FinishReason.ERROR
    assert "slot holds" in deltas[-1].error.message
    # the engine is still healthy afterwards
    _, end = run(engine, image_prompt(engine, "ok"), max_tokens=2, request_id="after")
    assert end.finish_reason is FinishReason.LENGTH


def test_leaving_a_stream_early_aborts_and_frees_the_slot(engine):
    prompt = image_prompt(engine, "describe", seed=4)
    aborted_before = engine.snapshot().counters.finished[FinishReason.ABORT]
    stream = engine.generate_sync(Request("long", prompt, SamplingParams(max_tokens=4000,
                                                                         temperature=0)))
    for n, _ in enumerate(stream):
        if n == 3:
            break
    stream.close()  # what a disconnecting client does
    _, end = run(engine, prompt, max_tokens=4, request_id="next")
    assert end.finish_reason is FinishReason.LENGTH
    snap = engine.snapshot()
    assert snap.counters.finished[FinishReason.ABORT] == aborted_before + 1
    assert snap.busy_slots == 0


def test_full_queue_refuses_with_a_retry_hint(tiny_model):
    import pytest

    from tests.engine.conftest import make_engine
    from vlmserve.errors import QueueFullError

    client = make_engine(tiny_model, n_parallel=1, max_queue=1)
    try:
        prompt = image_prompt(client, "describe")
        params = SamplingParams(max_tokens=2000, temperature=0)
        streams = [client.generate_sync(Request("q0", prompt, params))]
        next(streams[0])  # admitted: it runs in the only slot
        streams.append(client.generate_sync(Request("q1", prompt, params)))  # waits in queue
        with pytest.raises(QueueFullError) as info:
            client.generate_sync(Request("q2", prompt, params))
        assert info.value.retry_after_s >= 1
        for s in streams:
            s.close()
    finally:
        client.close()

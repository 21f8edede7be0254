"""A clip through llama.cpp: frame pairs merged by mtmd, timestamps, token counts, caches."""

from __future__ import annotations

from tests.engine.conftest import run, token_ids
from tests.video.clips import write_clip
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.engine.backend import TextChunk
from vlmserve.video import prepare_clip


def _prompt(engine, clip, question="What happens?", history=()):
    return ChatRenderer(engine.info.chat_template).render(
        [*history, ChatMessage.user(question, clip)])


def test_a_clip_is_one_image_chunk_per_pair_after_its_timestamp(engine):
    clip = prepare_clip(write_clip(n_frames=25, rate=10))  # 5 frames -> 3 pairs
    chunks = engine._backend.tokenize_prompt(_prompt(engine, clip))
    images = [c for c in chunks if not isinstance(c, TextChunk)]
    assert len(images) == clip.n_pairs == 3  # mtmd merged each pair into one chunk
    per_pair = engine.image_tokens(clip.width, clip.height)
    assert [c.n_tokens for c in images] == [per_pair] * 3  # a pair costs one frame's tokens
    assert len({c.key for c in images}) == 3  # each pair its own cache key
    # The text before each pair ends with its timestamp and <|vision_start|>.
    vision_start = engine._backend.tokenize("<|vision_start|>")
    assert len(vision_start) == 1
    for i, index in enumerate(k for k, c in enumerate(chunks) if not isinstance(c, TextChunk)):
        tokens = chunks[index - 1].tokens
        assert tokens[-1] == vision_start[0]
        before = bytes(b for t in tokens[-20:-1]
                       for b in engine._backend.token_bytes(t)).decode("utf-8", "replace")
        assert before.endswith(clip.pair_label(i)), before
    for c in images:
        c.free()


def test_token_count_cache_hit_and_follow_up(engine):
    clip = prepare_clip(write_clip(n_frames=40, rate=10, width=96, height=64))
    prompt = _prompt(engine, clip)
    counted = engine.count_prompt_tokens(prompt)
    first_deltas, first = run(engine, prompt, max_tokens=6, request_id="clip-1")
    stats = first.stats
    assert stats.prompt_tokens == counted  # counted before the run, exactly
    assert stats.images == clip.n_pairs
    assert stats.image_tokens == clip.n_pairs * engine.image_tokens(clip.width, clip.height)
    assert stats.image_cache_hits == 0

    # The same clip again, decoded again from the same bytes: the same content, so the
    # image cache (and the slot's KV prefix) serve it, and the answer is the same.
    again = _prompt(engine, prepare_clip(write_clip(n_frames=40, rate=10, width=96, height=64)))
    second_deltas, second = run(engine, again, max_tokens=6, request_id="clip-2")
    assert second.stats.cached_tokens >= stats.image_tokens  # the whole clip came from KV
    assert second.stats.image_encode_ms == 0.0
    assert token_ids(second_deltas) == token_ids(first_deltas)

    # A follow-up question about the clip reuses the clip's KV.
    history = [ChatMessage.user("What happens?", clip),
               ChatMessage.assistant("".join(d.text for d in first_deltas))]
    follow = ChatRenderer(engine.info.chat_template).render(
        [*history, ChatMessage.user("And at the end?")])
    _, third = run(engine, follow, max_tokens=4, request_id="clip-3")
    assert third.stats.cached_tokens >= stats.image_tokens
    assert third.stats.image_encode_ms == 0.0


def test_a_cache_hit_gives_the_same_tokens_as_a_fresh_encode(tiny_model):
    from tests.engine.conftest import make_engine

    data = write_clip(n_frames=20, rate=10)
    fresh = make_engine(tiny_model, n_parallel=1, image_cache_mb=0)
    try:
        a, _ = run(fresh, _prompt(fresh, prepare_clip(data)), max_tokens=6)
    finally:
        fresh.close()
    cached = make_engine(tiny_model, n_parallel=1)
    try:
        # Another prefix before the clip: its KV cannot be reused, its embeddings can.
        clip = prepare_clip(data)
        run(cached, _prompt(cached, clip, history=[ChatMessage.system("warm up")]),
            max_tokens=2)
        c, hit = run(cached, _prompt(cached, prepare_clip(data)), max_tokens=6)
    finally:
        cached.close()
    assert hit.stats.image_cache_hits == clip.n_pairs  # every pair from the RAM cache
    assert hit.stats.image_encode_ms == 0.0
    assert token_ids(c) == token_ids(a)  # cached == freshly encoded

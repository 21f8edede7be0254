"""The disk tier through the real engine: a restarted engine skips the encoder and the
image's prefill for a known picture (embeddings and the KV of the prompt through the
image are both on disk) and gives the same tokens; a damaged entry is never served."""

from __future__ import annotations

from tests.engine.conftest import image_prompt, make_engine, run, token_ids
from vlmserve.engine.disk_cache import file_name


def embedding_file(cache_dir, engine, prompt):
    key = f"{prompt.images[0].content_hash}:{engine.info.mmproj_id}"
    return cache_dir / file_name(key)


def cold_run(tiny_model, cache_dir, question, seed):
    first = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        prompt = image_prompt(first, question, 320, 256, seed=seed)
        deltas, end = run(first, prompt, max_tokens=16, request_id="cold")
        assert end.stats.image_encode_ms > 0 and end.stats.image_disk_hits == 0
        return prompt, token_ids(deltas), embedding_file(cache_dir, first, prompt)
    finally:
        first.close()


def test_a_restarted_engine_reads_known_pictures_and_their_prefix_from_disk(tiny_model,
                                                                          tmp_path):
    cache_dir = tmp_path / "embd"
    prompt, cold, embd_file = cold_run(tiny_model, cache_dir, "请用中文描述这张图片", 11)
    assert embd_file.is_file() and len(list(cache_dir.iterdir())) == 2  # + the KV prefix

    second = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        deltas, end = run(second, prompt, max_tokens=16, request_id="restarted")
        assert end.stats.image_disk_hits == 1 and end.stats.image_encode_ms == 0
        assert end.stats.cached_tokens > end.stats.image_tokens  # the prefill was skipped too
        assert token_ids(deltas) == cold
        snap = second.snapshot()
        assert snap.counters.image_disk_hits == 1 and snap.counters.images_encoded == 0
        assert snap.counters.prefix_disk_hits == 1
        assert snap.disk_cache is not None and snap.disk_cache.hits == 1
    finally:
        second.close()


def test_without_the_kv_prefix_the_embeddings_still_come_from_disk(tiny_model, tmp_path):
    cache_dir = tmp_path / "embd"
    prompt, cold, embd_file = cold_run(tiny_model, cache_dir, "What is here?", 13)
    for entry in cache_dir.iterdir():
        if entry != embd_file:
            entry.unlink()  # the KV prefix is gone (evicted, or another model's context)
    second = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        deltas, end = run(second, prompt, max_tokens=16, request_id="embeddings-only")
        assert end.stats.image_disk_hits == 1 and end.stats.image_encode_ms == 0
        assert end.stats.cached_tokens == 0
        assert token_ids(deltas) == cold
        assert second.snapshot().counters.prefix_disk_hits == 0
    finally:
        second.close()


def test_damaged_disk_entries_are_removed_and_the_image_read_again(tiny_model, tmp_path):
    cache_dir = tmp_path / "embd"
    prompt, cold, _ = cold_run(tiny_model, cache_dir, "What is here?", 12)
    for entry in cache_dir.iterdir():
        entry.write_bytes(entry.read_bytes()[:-100])  # truncated

    second = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        deltas, end = run(second, prompt, max_tokens=16, request_id="after-damage")
        assert end.stats.image_disk_hits == 0 and end.stats.image_encode_ms > 0
        assert token_ids(deltas) == cold
        assert second.snapshot().disk_cache.corrupt_removed == 2
    finally:
        second.close()

"""The disk tier through the real engine: a restarted engine skips the encoder for a known
picture and gives the same tokens; a damaged entry is never served."""

from __future__ import annotations

from tests.engine.conftest import image_prompt, make_engine, run, token_ids


def test_a_restarted_engine_reads_known_pictures_from_disk(tiny_model, tmp_path):
    cache_dir = tmp_path / "embd"
    first = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        prompt = image_prompt(first, "请用中文描述这张图片", 320, 256, seed=11)
        deltas, end = run(first, prompt, max_tokens=16, request_id="cold")
        assert end.stats.image_encode_ms > 0 and end.stats.image_disk_hits == 0
        cold = token_ids(deltas)
    finally:
        first.close()
    assert len(list(cache_dir.iterdir())) == 1

    second = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        deltas, end = run(second, prompt, max_tokens=16, request_id="restarted")
        assert end.stats.image_disk_hits == 1 and end.stats.image_encode_ms == 0
        assert token_ids(deltas) == cold
        snap = second.snapshot()
        assert snap.counters.image_disk_hits == 1 and snap.counters.images_encoded == 0
        assert snap.disk_cache is not None and snap.disk_cache.hits == 1
    finally:
        second.close()


def test_a_damaged_disk_entry_is_removed_and_the_image_encoded_again(tiny_model, tmp_path):
    cache_dir = tmp_path / "embd"
    first = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        prompt = image_prompt(first, "What is here?", 256, 256, seed=12)
        cold = token_ids(run(first, prompt, max_tokens=16, request_id="cold")[0])
    finally:
        first.close()
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(entry.read_bytes()[:-100])  # truncated

    second = make_engine(tiny_model, n_parallel=1, image_cache_dir=cache_dir)
    try:
        deltas, end = run(second, prompt, max_tokens=16, request_id="after-damage")
        assert end.stats.image_disk_hits == 0 and end.stats.image_encode_ms > 0
        assert token_ids(deltas) == cold
        assert second.snapshot().disk_cache.corrupt_removed == 1
    finally:
        second.close()

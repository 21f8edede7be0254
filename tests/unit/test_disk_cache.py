"""The disk tier of the image-embedding cache, on real files (no mocks): bit-exact round
trips, restarts, LRU within the byte budget, and damaged files never served."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vlmserve.engine.disk_cache import (
    TEMP_PREFIX,
    DiskEmbeddingCache,
    encode_record,
    file_name,
)


def embd(seed: int, rows: int = 9, cols: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


def key(i: int) -> str:
    return f"{i:064x}:mmproj-{i % 3}"


def entry_size(k: str, e: np.ndarray) -> int:
    head, payload = encode_record(k, e)
    return len(head) + payload.nbytes


def test_round_trip_is_bit_exact(tmp_path: Path):
    cache = DiskEmbeddingCache(tmp_path, 1 << 20)
    e = embd(1)
    e[0, :3] = [np.nan, -0.0, np.inf]  # bit patterns, not just values
    assert cache.put(key(1), e) is True
    got = cache.get(key(1))
    assert got is not None and got.dtype == np.float32 and got.shape == e.shape
    assert got.tobytes() == e.tobytes()
    assert np.array_equal(got, e, equal_nan=True)
    got[0, 0] = 1.0  # a private, writable copy
    assert cache.get(key(1)).tobytes() == e.tobytes()
    s = cache.stats()
    assert (s.hits, s.misses, s.writes, s.entries) == (2, 0, 1, 1)
    assert s.bytes == entry_size(key(1), e) == (tmp_path / file_name(key(1))).stat().st_size


def test_miss_and_second_put_of_a_key(tmp_path: Path):
    cache = DiskEmbeddingCache(tmp_path, 1 << 20)
    assert cache.get(key(7)) is None
    assert cache.put(key(7), embd(7)) is True
    assert cache.put(key(7), embd(7)) is False  # already stored: not written again
    assert key(7) in cache and key(8) not in cache
    s = cache.stats()
    assert (s.misses, s.writes, s.entries) == (1, 1, 1)


def test_non_contiguous_and_3d_arrays(tmp_path: Path):
    cache = DiskEmbeddingCache(tmp_path, 1 << 20)
    e = embd(2, 8, 8)[:, ::2]  # a strided view
    cube = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    cache.put(key(1), e)
    cache.put(key(2), cube)
    assert np.array_equal(cache.get(key(1)), e)
    got = cache.get(key(2))
    assert got.shape == (2, 3, 4) and np.array_equal(got, cube)


def test_a_new_instance_serves_what_the_old_one_wrote(tmp_path: Path):
    first = DiskEmbeddingCache(tmp_path, 1 << 20)
    for i in range(3):
        first.put(key(i), embd(i))
    again = DiskEmbeddingCache(tmp_path, 1 << 20)
    assert again.stats().entries == 3
    assert again.stats().bytes == first.stats().bytes
    for i in range(3):
        assert np.array_equal(again.get(key(i)), embd(i))


def test_lru_eviction_order_and_budget(tmp_path: Path):
    size = entry_size(key(0), embd(0))
    cache = DiskEmbeddingCache(tmp_path, 3 * size)
    for i in range(3):
        cache.put(key(i), embd(i))
    assert cache.get(key(0)) is not None  # 0 is now the most recent; 1 the oldest
    cache.put(key(3), embd(3))
    assert key(1) not in cache and not (tmp_path / file_name(key(1))).exists()
    assert all(key(i) in cache for i in (0, 2, 3))
    cache.put(key(4), embd(4))
    assert key(2) not in cache
    s = cache.stats()
    assert s.evictions == 2 and s.entries == 3 and s.bytes == 3 * size <= s.budget_bytes
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert on_disk == s.bytes


def test_recency_survives_a_restart(tmp_path: Path):
    size = entry_size(key(0), embd(0))
    cache = DiskEmbeddingCache(tmp_path, 3 * size)
    for i in range(3):
        cache.put(key(i), embd(i))
    for i in range(3):  # mtimes far apart, 0 the oldest
        os.utime(tmp_path / file_name(key(i)), (1_000_000 + i, 1_000_000 + i))
    again = DiskEmbeddingCache(tmp_path, 3 * size)
    assert again.get(key(0)) is not None  # touched: now newer than 1 and 2
    again.put(key(3), embd(3))
    assert key(1) not in again and key(0) in again


def test_a_smaller_budget_at_start_evicts_the_oldest(tmp_path: Path):
    size = entry_size(key(0), embd(0))
    cache = DiskEmbeddingCache(tmp_path, 4 * size)
    for i in range(4):
        cache.put(key(i), embd(i))
        os.utime(tmp_path / file_name(key(i)), (1_000_000 + i, 1_000_000 + i))
    small = DiskEmbeddingCache(tmp_path, 2 * size)
    assert [key(i) in small for i in range(4)] == [False, False, True, True]
    assert len(list(tmp_path.iterdir())) == 2


def test_an_entry_larger_than_the_budget_is_not_written(tmp_path: Path):
    e = embd(1)
    cache = DiskEmbeddingCache(tmp_path, entry_size(key(1), e) - 1)
    cache.put(key(2), embd(2, rows=1))
    assert cache.put(key(1), e) is False
    assert key(1) not in cache and key(2) in cache  # nothing evicted for it
    assert cache.stats().writes == 1
    assert DiskEmbeddingCache(tmp_path / "off", 0).put(key(1), e) is False


def test_non_float_arrays_are_refused(tmp_path: Path):
    with pytest.raises(ValueError):
        DiskEmbeddingCache(tmp_path, 1 << 20).put(key(1), np.arange(4))


# ---------------------------------------------------------------- damaged files


def _damaged(tmp_path: Path, damage) -> tuple[DiskEmbeddingCache, Path]:
    """Write one good entry, damage its file, and open a fresh instance over the folder."""
    DiskEmbeddingCache(tmp_path, 1 << 20).put(key(1), embd(1))
    path = tmp_path / file_name(key(1))
    damage(path)
    return DiskEmbeddingCache(tmp_path, 1 << 20), path


def _truncate(n: int):
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: n if n >= 0 else len(data) + n])
    return damage


def _flip(offset_from_end: int):
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[-offset_from_end] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


def _append(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"\0\0\0\0")


def _other_key(path: Path) -> None:
    head, payload = encode_record(key(99), embd(1))  # right shape, wrong key
    path.write_bytes(head + bytes(payload))


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[20] = ord("}")  # inside the JSON header
    path.write_bytes(bytes(data))


def _wrong_size_header(path: Path) -> None:
    # a header that promises a different shape than the payload holds, checksum intact
    e = embd(1)
    head, payload = encode_record(key(1), e.reshape(-1)[:-16].reshape(8, 16))
    path.write_bytes(head + bytes(memoryview(e).cast("B")))


DAMAGES = {
    "truncated payload": _truncate(-5),
    "truncated header": _truncate(30),
    "empty file": _empty,
    "extra bytes": _append,
    "wrong size": _wrong_size_header,
    "wrong key": _other_key,
    "flipped payload byte": _flip(1),
    "flipped byte mid payload": _flip(200),
    "garbage": _garbage,
    "unreadable header": _bad_header,
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_file_is_never_served_and_is_removed(tmp_path: Path, damage):
    cache, path = _damaged(tmp_path, damage)
    assert cache.get(key(1)) is None
    assert not path.exists()
    s = cache.stats()
    assert (s.corrupt_removed, s.misses, s.hits, s.entries, s.bytes) == (1, 1, 0, 0, 0)
    assert cache.put(key(1), embd(1)) is True  # and the key can be stored again
    assert np.array_equal(cache.get(key(1)), embd(1))


def test_files_that_are_not_entries_are_left_alone(tmp_path: Path):
    (tmp_path / "README").write_text("mine")
    cache = DiskEmbeddingCache(tmp_path, 1 << 20)
    assert cache.stats().entries == 0 and (tmp_path / "README").exists()


def test_leftover_temp_files_are_ignored_and_stale_ones_removed(tmp_path: Path):
    head, payload = encode_record(key(1), embd(1))
    fresh = tmp_path / f"{TEMP_PREFIX}abc-{file_name(key(1))}"
    stale = tmp_path / f"{TEMP_PREFIX}def-{file_name(key(2))}"
    for p in (fresh, stale):
        p.write_bytes(head + bytes(payload)[:10])  # a writer died mid-write
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    cache = DiskEmbeddingCache(tmp_path, 1 << 20)
    s = cache.stats()
    assert (s.entries, s.bytes) == (0, 0)
    assert cache.get(key(1)) is None and cache.get(key(2)) is None
    assert fresh.exists() and not stale.exists()  # a live writer's file is not touched
    assert cache.stats().corrupt_removed == 0


def test_the_folder_is_created(tmp_path: Path):
    cache = DiskEmbeddingCache(tmp_path / "a" / "b", 1 << 20)
    assert cache.put(key(1), embd(1)) and (tmp_path / "a" / "b" / file_name(key(1))).is_file()


# ---------------------------------------------------------------- threads


def test_concurrent_puts_and_gets(tmp_path: Path):
    size = entry_size(key(0), embd(0))
    cache = DiskEmbeddingCache(tmp_path, 6 * size)  # smaller than the keys: evictions race
    errors: list[str] = []
    start = threading.Barrier(6)

    def worker(t: int) -> None:
        start.wait()
        for n in range(60):
            i = (t * 7 + n) % 10
            if n % 2:
                cache.put(key(i), embd(i))
            else:
                got = cache.get(key(i))
                if got is not None and not np.array_equal(got, embd(i)):
                    errors.append(f"key {i}: wrong data")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    s = cache.stats()
    assert s.corrupt_removed == 0
    assert s.bytes <= s.budget_bytes and s.entries <= 6
    files = [p for p in tmp_path.iterdir() if not p.name.startswith(TEMP_PREFIX)]
    assert len(files) == s.entries and sum(p.stat().st_size for p in files) == s.bytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert s.hits + s.misses == 6 * 30
    again = DiskEmbeddingCache(tmp_path, 6 * size)
    assert again.stats().entries == s.entries

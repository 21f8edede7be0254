"""The engine's pure-Python parts, without a model: detokenizer, caches, slots
(the scheduler has its own file, tests/unit/test_scheduler.py)."""

from __future__ import annotations

import numpy as np

from vlmserve.engine.detokenize import IncrementalDetokenizer
from vlmserve.engine.image_cache import ImageCache
from vlmserve.engine.prefix_cache import ImageUnit, choose_slot, common_prefix, position_after

# A byte table standing in for a vocabulary: each "token" is a raw byte string.
PIECES = {i: bytes([b]) for i, b in enumerate("中文".encode())} | {
    10: b"ab", 11: b"cd", 12: b"\xff", 13: "好".encode()}


def stream(tokens, stop=()):
    d = IncrementalDetokenizer(PIECES.__getitem__, stop)
    out = [d.push(t) for t in tokens]
    out.append(d.flush())
    return out, d


def test_multibyte_characters_are_never_split():
    out, d = stream([0, 1, 2, 3, 4, 5])  # 中 and 文, one byte per token
    assert out == ["", "", "中", "", "", "文", ""]
    assert d.text == "中文"


def test_invalid_and_incomplete_bytes_become_replacement_characters():
    out, _ = stream([12, 10, 0, 1])  # invalid byte, 'ab', then half of 中 at the end
    assert "".join(out) == "\ufffdab\ufffd"


def test_stop_string_is_held_back_then_cut():
    out, d = stream([10, 11, 10], stop=("bc",))  # "ab" "cd": 'b' held (could start "bc")
    assert out[0] == "a"
    assert d.stopped and d.text == "a"


def test_held_prefix_released_when_not_a_stop():
    out, d = stream([10, 10], stop=("bx",))
    assert "".join(out) == "abab" and not d.stopped


def test_image_cache_lru_never_evicts_entries_in_use():
    cache = ImageCache(budget_bytes=3 * 400)
    arr = lambda: np.zeros(100, dtype=np.float32)  # noqa: E731  400 bytes
    for key in "abc":
        assert cache.put_acquired(key, arr())
    cache.release("b")
    cache.release("c")  # 'a' stays pinned
    assert cache.put_acquired("d", arr())  # over budget: evicts the oldest unpinned ('b')
    assert "a" in cache and "b" not in cache and "c" in cache
    assert cache.acquire("b") is None and cache.stats().misses == 1
    assert cache.acquire("c") is not None and cache.stats().hits == 1
    assert cache.stats().bytes <= cache.budget_bytes


def test_image_cache_refuses_entries_bigger_than_the_budget():
    cache = ImageCache(budget_bytes=100)
    assert not cache.put_acquired("big", np.zeros(1000, dtype=np.float32))
    assert "big" not in cache


def test_prefix_matching_treats_images_as_wholes_and_keeps_one_unit_to_decode():
    img = ImageUnit("h1", n_tokens=576, n_pos=24)
    cached = [1, 2, img, 3, 4, 5]
    assert common_prefix(cached, [1, 2, img, 3, 9]) == 4
    assert common_prefix(cached, [1, 2, ImageUnit("h2", 576, 24), 3]) == 2
    assert common_prefix(cached, cached) == len(cached) - 1
    assert position_after(cached, 3) == 2 + 24


def test_choose_slot_prefers_longest_prefix_then_least_recently_used():
    prompt = [1, 2, 3, 4]
    free = [(0, [9], 5.0), (1, [1, 2, 3], 9.0), (2, [], 1.0)]
    assert choose_slot(free, prompt).slot_index == 1
    assert choose_slot([(0, [], 5.0), (2, [], 1.0)], prompt).slot_index == 2


def test_choose_slot_keeps_another_conversation_when_only_its_start_is_shared():
    other = [1, 2, *range(100, 140)]  # another session: shares only the template's start
    prompt = [1, 2, 7, 8, 9]
    assert choose_slot([(0, other, 1.0), (1, [], 5.0)], prompt).slot_index == 1
    # every slot holds another conversation: the least recently used one is given up
    busy = [(0, other, 3.0), (1, [1, *range(200, 230)], 2.0)]
    choice = choose_slot(busy, prompt)
    assert choice.slot_index == 1 and choice.reused_units == 1
    # a slot the prompt continues (half or more of its cells) is still the one
    follow_up = [*other, 50, 51]
    assert choose_slot([(0, other, 1.0), (1, [], 5.0)], follow_up).slot_index == 0
    image = ImageUnit("h", 576, 24)
    assert choose_slot([(0, [1, image, 5, 6], 1.0), (1, [], 5.0)],
                       [1, image, 9, 9]).slot_index == 0  # the picture is most of it


def test_slot_cell_count_tracks_its_cached_units():
    from vlmserve.engine.slots import Slot

    slot = Slot(0)
    img = ImageUnit("h", n_tokens=576, n_pos=24)
    slot.add([1, 2, img, 3])
    assert slot.cells == 579
    slot.keep(2)
    assert slot.cells == 2 and slot.cached == [1, 2]
    slot.keep(0)
    assert slot.cells == 0 and slot.cached == []

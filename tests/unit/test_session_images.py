"""The session picture store: one copy per picture, LRU by bytes, references resolved."""

from __future__ import annotations

import pytest

from vlmserve.chat import ChatMessage
from vlmserve.errors import SessionImageGoneError
from vlmserve.session_images import SessionImageStore
from vlmserve.sessions import SessionStore
from vlmserve.types import PreparedImage


def picture(seed: int, side: int = 100) -> PreparedImage:
    return PreparedImage.from_rgb(bytes([seed % 256]) * (side * side * 3), side, side)


def test_a_picture_resent_by_many_sessions_is_held_once():
    store = SessionStore(images=SessionImageStore(10 * 30_000))
    for i in range(100):
        same = picture(7)  # a new object each time, as each request decodes its own
        store.replace(f"s{i}", [ChatMessage.user("what?", same)])
    stats = store.images.stats()
    assert stats.images == 1 and stats.bytes == 30_000
    first, last = store.get("s0")[0].parts[0].image, store.get("s99")[0].parts[0].image
    assert first.rgb is last.rgb  # the same bytes, not a copy per session


def test_pictures_beyond_the_budget_evict_the_least_recently_used():
    images = SessionImageStore(3 * 30_000)
    for seed in range(3):
        assert images.put(picture(seed))
    assert images.get(picture(0).content_hash) is not None  # 0 is now the newest use
    images.put(picture(3))
    assert images.get(picture(1).content_hash) is None  # the least recently used went
    assert images.get(picture(0).content_hash) is not None
    stats = images.stats()
    assert stats.images == 3 and stats.bytes <= stats.max_bytes and stats.evictions == 1
    assert not images.put(picture(9, side=200))  # alone over the budget: not held


def test_an_evicted_picture_names_its_turn_and_can_be_sent_again():
    store = SessionStore(images=SessionImageStore(30_000))
    old = picture(1)
    store.replace("a", [ChatMessage.user("one"), ChatMessage.assistant("ok"),
                        ChatMessage.user("two", old), ChatMessage.assistant("ok")])
    store.replace("b", [ChatMessage.user("x", picture(2))])  # evicts picture 1
    with pytest.raises(SessionImageGoneError, match="turn 2 of session 'a'") as info:
        store.get("a")
    assert info.value.http_status == 410
    again = store.get("a", offered=[picture(1)])  # the client sends it again
    assert again[2].parts[0].image.content_hash == old.content_hash

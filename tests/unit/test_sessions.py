"""The in-memory session store: copies, TTL, LRU cap, id validation, threads."""

from __future__ import annotations

import threading

import pytest

from vlmserve.chat import ChatMessage
from vlmserve.errors import RequestError, VlmserveError
from vlmserve.sessions import SessionStore, validate_session_id


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hi(n: int = 0) -> ChatMessage:
    return ChatMessage.user(f"hi {n}")


def test_append_get_replace_delete():
    store = SessionStore()
    assert store.get("s1") == [] and len(store) == 0
    store.append("s1", hi(1), ChatMessage.assistant("hello"))
    store.append("s1", hi(2))
    assert [m.text for m in store.get("s1")] == ["hi 1", "hello", "hi 2"]
    store.replace("s1", [hi(3)])
    assert store.get("s1") == [hi(3)]
    assert "s1" in store and len(store) == 1
    assert store.delete("s1") is True
    assert store.delete("s1") is False
    assert store.get("s1") == [] and len(store) == 0


def test_get_returns_a_copy():
    store = SessionStore()
    store.append("s", hi())
    copy = store.get("s")
    copy.append(hi(99))
    copy.clear()
    assert store.get("s") == [hi()]
    given = [hi(1)]
    store.replace("s", given)
    given.append(hi(2))
    assert store.get("s") == [hi(1)]


def test_replace_with_nothing_deletes():
    store = SessionStore()
    store.append("s", hi())
    store.replace("s", [])
    assert "s" not in store and len(store) == 0


def test_sessions_expire_after_ttl_of_idleness():
    clock = FakeClock()
    store = SessionStore(ttl_s=60, clock=clock)
    store.append("a", hi())
    store.append("b", hi())
    clock.now += 50
    assert store.get("a") == [hi()]  # a use: a's clock restarts
    clock.now += 20  # b idle 70 s, a idle 20 s
    assert len(store) == 1
    assert store.get("b") == []
    assert store.get("a") == [hi()]
    clock.now += 60
    assert store.get("a") == [] and len(store) == 0
    store.append("a", hi(2))  # an expired id starts afresh
    assert store.get("a") == [hi(2)]


def test_least_recently_used_is_evicted_at_the_cap():
    clock = FakeClock()
    store = SessionStore(max_sessions=3, clock=clock)
    for name in ("a", "b", "c"):
        clock.now += 1
        store.append(name, hi())
    clock.now += 1
    store.get("a")  # a is now the most recently used; b the least
    clock.now += 1
    store.append("d", hi())
    assert len(store) == 3
    assert "b" not in store
    assert all(name in store for name in ("a", "c", "d"))
    clock.now += 1
    store.replace("e", [hi()])
    assert "c" not in store and len(store) == 3


def test_appending_to_an_existing_session_at_the_cap_evicts_nothing():
    store = SessionStore(max_sessions=2)
    store.append("a", hi())
    store.append("b", hi())
    store.append("a", hi(2))
    assert len(store) == 2 and store.get("b") == [hi()]


@pytest.mark.parametrize("good", ["a", "user-42", "tab:3.chat_1", "A" * 128, "0"])
def test_valid_session_ids(good):
    assert validate_session_id(good) == good
    SessionStore().append(good, hi())


@pytest.mark.parametrize("bad", ["", "A" * 129, "has space", "slash/", "中文", "new\nline", 42,
                                 None])
def test_invalid_session_ids_are_request_errors(bad):
    store = SessionStore()
    for call in (lambda: store.get(bad), lambda: store.append(bad, hi()),
                 lambda: store.replace(bad, [hi()]), lambda: store.delete(bad)):
        with pytest.raises(RequestError) as info:
            call()
        assert "invalid session id" in info.value.message
        assert "\n" not in info.value.message


def test_only_chat_messages_are_stored():
    store = SessionStore()
    with pytest.raises(TypeError):
        store.append("s", "hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.replace("s", [{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    assert len(store) == 0


def test_bad_limits_are_rejected():
    with pytest.raises(VlmserveError):
        SessionStore(ttl_s=0)
    with pytest.raises(VlmserveError):
        SessionStore(max_sessions=0)


def test_concurrent_appends_are_all_kept():
    store = SessionStore(max_sessions=100)
    threads_n, per_thread = 8, 300
    barrier = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            store.append("shared", ChatMessage.user(f"{t}:{i}"))
            store.append(f"own-{t}", ChatMessage.user(str(i)))
            store.get("shared")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    shared = store.get("shared")
    assert len(shared) == threads_n * per_thread
    for t in range(threads_n):
        mine = [int(m.text.split(":")[1]) for m in shared if m.text.startswith(f"{t}:")]
        assert mine == list(range(per_thread))  # each thread's order preserved
        assert len(store.get(f"own-{t}")) == per_thread
    assert len(store) == threads_n + 1

"""The consistent-hash ring: stable owners, an even spread, and a joining or leaving
replica moving only its own share of keys."""

from __future__ import annotations

import pytest

from vlmserve.cluster.hash_ring import HashRing

KEYS = [f"session:{i}" for i in range(2000)]


def owners(ring: HashRing) -> dict[str, str | None]:
    return {k: ring.owner(k) for k in KEYS}


def test_owner_is_stable_and_every_member_gets_a_fair_share() -> None:
    ring = HashRing(["r1", "r2", "r3"])
    again = HashRing(["r3", "r1", "r2"])  # the order members are given in does not matter
    assert owners(ring) == owners(again)
    counts = {m: list(owners(ring).values()).count(m) for m in ring.members}
    assert all(len(KEYS) / 3 * 0.6 < c < len(KEYS) / 3 * 1.4 for c in counts.values()), counts


def test_a_joining_member_takes_only_keys_it_now_owns() -> None:
    before = owners(HashRing(["r1", "r2", "r3"]))
    after = owners(HashRing(["r1", "r2", "r3", "r4"]))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "r4" for k in moved)  # nothing moves between the old members
    assert 0.15 < len(moved) / len(KEYS) < 0.35  # about a quarter: the new member's share


def test_a_leaving_member_moves_only_its_own_keys() -> None:
    before = owners(HashRing(["r1", "r2", "r3"]))
    after = owners(HashRing(["r1", "r3"]))
    for key in KEYS:
        if before[key] != "r2":
            assert after[key] == before[key]
        else:
            assert after[key] in ("r1", "r3")


def test_walk_lists_every_member_once_owner_first() -> None:
    ring = HashRing(["a", "b", "c", "d"])
    for key in KEYS[:50]:
        walk = ring.walk(key)
        assert walk[0] == ring.owner(key)
        assert sorted(walk) == ["a", "b", "c", "d"]
    assert ring.walk("x", limit=2) == ring.walk("x")[:2]


def test_empty_ring_and_unchanged_membership() -> None:
    assert HashRing().owner("k") is None and HashRing().walk("k") == []
    ring = HashRing(["a", "b"])
    assert ring.with_members({"b", "a"}) is ring
    assert ring.with_members({"a"}).members == {"a"}
    with pytest.raises(ValueError):
        HashRing(["a"], vnodes=0)

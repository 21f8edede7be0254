"""The routing policy without Ray: which key a request has, and the order replicas are
tried in (ring owner first, a saturated one spilled behind the rest, least loaded when
there is no key)."""

from __future__ import annotations

from vlmserve.cluster.hash_ring import HashRing
from vlmserve.cluster.routing import affinity_key, rank_replicas
from vlmserve.types import PreparedImage, Prompt, Request

RING = HashRing(["r1", "r2", "r3"])
IDS = ["r1", "r2", "r3"]


def image(seed: int) -> PreparedImage:
    return PreparedImage.from_rgb(bytes([seed]) * 12, 2, 2)


def test_session_beats_picture_and_picture_beats_nothing() -> None:
    first, second = image(1), image(2)
    prompt = Prompt(("look", first, "and", second))
    assert affinity_key(Request("a", prompt, session_id="s1")) == "session:s1"
    assert affinity_key(Request("a", prompt)) == f"image:{first.content_hash}"
    assert affinity_key(Request("a", Prompt(("just text",)))) is None


def test_a_key_goes_to_its_ring_owner_then_along_the_ring() -> None:
    for n in range(20):
        key = f"session:{n}"
        ranks = rank_replicas(RING, IDS, key, {}, spill_at=4)
        assert [r for rank in ranks for r in rank] == RING.walk(key)
        assert all(len(rank) == 1 for rank in ranks)


def test_a_saturated_owner_spills_to_the_next_on_the_ring() -> None:
    key = "image:abc"
    walk = RING.walk(key)
    ranks = rank_replicas(RING, IDS, key, {walk[0]: 4}, spill_at=4)
    assert [rank[0] for rank in ranks] == [walk[1], walk[2], walk[0]]
    below = rank_replicas(RING, IDS, key, {walk[0]: 3}, spill_at=4)
    assert below[0] == [walk[0]]  # below the threshold it keeps its replica
    everyone = rank_replicas(RING, IDS, key, dict.fromkeys(IDS, 9), spill_at=4)
    assert [rank[0] for rank in everyone] == walk  # all saturated: the ring order again


def test_no_key_means_least_loaded_first() -> None:
    ranks = rank_replicas(RING, IDS, None, {"r1": 5, "r2": 0, "r3": None}, spill_at=4)
    assert len(ranks) == 1 and ranks[0][0] in ("r2", "r3") and ranks[0][-1] == "r1"


def test_only_current_replicas_are_ranked() -> None:
    key = "session:x"
    ranks = rank_replicas(RING, ["r1", "r3"], key, {}, spill_at=4)
    assert sorted(r for rank in ranks for r in rank) == ["r1", "r3"]
    assert rank_replicas(RING, [], key, {}, spill_at=4) == []

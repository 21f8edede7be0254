"""The routing policy, as plain functions (no Ray): which replica should serve a request.

1. A request that continues a server-side session goes where the session's hash lands on
   the ring: its KV prefix (and its pictures' embeddings) live there.
2. Else the content hash of its first picture picks the replica by the same ring: the one
   that encoded that picture for the last question about it.
3. Else (plain text, no session) the least loaded replica.

A preferred replica whose queue is at ``spill_at`` or more is saturated: the request
spills to the next replica on the ring (the order every later request for that key
follows too, so a spilled session keeps landing on the same second choice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vlmserve.cluster.hash_ring import HashRing
from vlmserve.types import Request

AFFINITY_KWARG = "affinity"  # the keyword argument the ingress passes and the router reads


def affinity_key(request: Request) -> str | None:
    """``session:<id>``, else ``image:<content hash of the first picture>``, else None."""
    if request.session_id is not None:
        return f"session:{request.session_id}"
    images = request.prompt.images
    if images:
        return f"image:{images[0].content_hash}"
    return None


def rank_replicas(ring: HashRing, candidates: Sequence[str], key: str | None,
                  loads: Mapping[str, int | None], spill_at: int) -> list[list[str]]:
    """Ranks of replica ids, most preferred first (Ray Serve tries rank after rank).

    With a key: one replica per rank, in the key's ring order, saturated ones (known
    load >= ``spill_at``) moved behind the others. Without: one rank of every candidate,
    least loaded first (unknown load counts as idle), from which the least loaded that
    accepts is taken.
    """
    if not candidates:
        return []
    if key is None:
        return [sorted(candidates, key=lambda c: loads.get(c) or 0)]
    present = set(candidates)
    order = [m for m in ring.with_members(candidates).walk(key) if m in present]
    order += [c for c in candidates if c not in order]
    hot = [m for m in order if (loads.get(m) or 0) >= spill_at]
    cool = [m for m in order if m not in hot]
    return [[m] for m in cool + hot]

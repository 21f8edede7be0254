"""``AffinityRouter``: Ray Serve's ``RequestRouter`` running ``routing.rank_replicas``.

It runs inside the process that holds the engine deployment's handle (the ingress). The
key comes from the call's ``affinity`` keyword argument; loads are the router's cached
queue lengths (what Ray Serve probes anyway). Requests are matched to their own routing
task (no FIFO mixin): a replica chosen for a session must serve that session's request,
not whichever request is oldest.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from vlmserve.cluster.hash_ring import HashRing
from vlmserve.cluster.routing import AFFINITY_KWARG, rank_replicas


class AffinityRouter(RequestRouter):
    """Session -> ring owner; else first picture -> ring owner; else least loaded."""

    def initialize_state(self, spill_at: int = 4, vnodes: int = 64) -> None:
        self._spill_at = spill_at
        self._ring = HashRing(vnodes=vnodes)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None,
                              ) -> list[list[RunningReplica]]:
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        self._ring = self._ring.with_members(by_id)
        key = pending_request.kwargs.get(AFFINITY_KWARG) if pending_request else None
        cache = self.replica_queue_len_cache
        loads = {uid: cache.get(r.replica_id) for uid, r in by_id.items()}
        if pending_request is not None:
            # Every rank tried and all full: back off before the next round (not a spin).
            pending_request.routing_context.should_backoff = True
        ranks = rank_replicas(self._ring, list(by_id), key, loads, self._spill_at)
        return [[by_id[uid] for uid in rank] for rank in ranks]

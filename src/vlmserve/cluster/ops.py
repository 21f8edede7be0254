"""The ingress's ``/health`` and its per-replica ``/metrics`` series.

``/health`` answers 200 while at least one engine replica is up, with ``replicas``:
``up`` (running, per Ray Serve) of ``total`` (the replicas Serve is keeping: running,
starting or recovering) and each posting replica's slots and queue. ``/metrics`` is the
app's usual registry (HTTP figures, and the engine figures summed over the replicas)
plus every engine figure once per replica as ``vlmserve_replica_*{replica="..."}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vlmserve.cluster.board import ReplicaPost
from vlmserve.cluster.remote_client import RemoteEngineClient
from vlmserve.http.metrics import EngineCollector
from vlmserve.http.services import Services

log = logging.getLogger(__name__)

ReplicaCounts = Callable[[], tuple[int, int]]  # (up, total)


def serve_replica_counts(app_name: str, deployment: str) -> ReplicaCounts:
    """(running, kept) replicas of ``deployment`` from Ray Serve's controller."""
    def counts() -> tuple[int, int]:
        from ray import serve

        status = serve.status().applications[app_name].deployments[deployment]
        states = {str(getattr(k, "value", k)): v for k, v in status.replica_states.items()}
        total = sum(v for k, v in states.items() if k != "STOPPING")
        return states.get("RUNNING", 0), total
    return counts


class CachedCounts:
    """``counts()`` at most once a second, from a worker thread (never on the loop)."""

    def __init__(self, counts: ReplicaCounts, fallback: Callable[[], int]) -> None:
        self._counts = counts
        self._fallback = fallback
        self._value: tuple[int, int] | None = None
        self._at = 0.0

    async def get(self) -> tuple[int, int]:
        if self._value is None or time.monotonic() - self._at > 1.0:
            try:
                self._value = await asyncio.to_thread(self._counts)
            except Exception:
                log.warning("could not read Ray Serve's status", exc_info=True)
                up = self._fallback()
                self._value = (up, max(up, self._value[1] if self._value else up))
            self._at = time.monotonic()
        return self._value


def cluster_routes(engine: RemoteEngineClient, counts: ReplicaCounts,
                   ) -> Callable[[Services], APIRouter]:
    """The ``first_routes`` of the ingress app (``http.app.create_app``)."""

    def build(services: Services) -> APIRouter:
        cached = CachedCounts(counts, lambda: len(engine.fresh_posts()))
        services.metrics.registry.register(ReplicaCollector(engine, cached))
        router = APIRouter()

        @router.get("/health")
        async def health() -> JSONResponse:
            up, total = await cached.get()
            posts = engine.fresh_posts()
            model = services.holder.model
            body = {
                "status": "ok" if up > 0 else "unavailable",
                "model": model.model_id if model else None,
                "vision": engine.info.vision,
                "replicas": {"up": up, "total": total,
                             "posting": [_replica_health(p) for p in posts]},
                "slots": sum(p.snapshot.n_slots for p in posts),
                "busy_slots": sum(p.snapshot.busy_slots for p in posts),
                "queue_depth": sum(p.snapshot.queue_depth for p in posts),
                "n_ctx_per_slot": engine.info.n_ctx_per_slot,
                "demo": services.settings.demo,
            }
            return JSONResponse(body, status_code=200 if up > 0 else 503,
                                headers=None if up > 0 else {"Retry-After": "2"})

        return router

    return build


def _replica_health(post: ReplicaPost) -> dict:
    s = post.snapshot
    return {"replica": post.replica, "slots": s.n_slots, "busy_slots": s.busy_slots,
            "queue_depth": s.queue_depth, "age_s": round(time.time() - post.posted_at, 2)}


class ReplicaCollector(Collector):
    """Each replica's engine figures, labelled ``replica``, and the replica counts."""

    def __init__(self, engine: RemoteEngineClient, counts: CachedCounts) -> None:
        self._engine = engine
        self._counts = counts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        posts = self._engine.fresh_posts()
        up = GaugeMetricFamily("vlmserve_replicas_up", "Engine replicas posting figures")
        up.add_metric([], len(posts))
        yield up
        families: dict[str, Metric] = {}
        for post in posts:
            snap = post.snapshot
            for family in EngineCollector(lambda s=snap: s).collect():
                if family.name == "vlmserve_model_loaded":
                    continue
                name = family.name.replace("vlmserve_", "vlmserve_replica_", 1)
                out = families.setdefault(name, Metric(name, family.documentation + " (per "
                                                       "replica)", family.type))
                for sample in family.samples:
                    out.add_sample(sample.name.replace("vlmserve_", "vlmserve_replica_", 1),
                                   {**sample.labels, "replica": post.replica}, sample.value)
        yield from families.values()

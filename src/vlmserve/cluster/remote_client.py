"""``RemoteEngineClient``: what the HTTP layer needs of an ``EngineClient``, over a Ray
Serve handle to the engine replicas.

``generate`` streams a request from whichever replica the router picks (the affinity key
goes along as a keyword argument). A replica dying under a stream is not a crash: with
nothing streamed yet the request is sent once more (the router has another replica);
after that the stream ends with a retryable 503 (``ReplicaLostError``), and the session
keeps its history because the ingress holds it. ``snapshot`` sums the figures the
replicas post on the board (read by a thread every second, so /health and /metrics
never wait on the cluster).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import fields, replace

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, RequestCancelledError
from ray.serve.handle import DeploymentHandle

from vlmserve.cluster.board import REPORT_EVERY_S, STALE_S, ReplicaPost
from vlmserve.cluster.errors import ReplicaLostError
from vlmserve.cluster.routing import AFFINITY_KWARG, affinity_key
from vlmserve.config import EngineConfig
from vlmserve.engine.backend import BackendInfo
from vlmserve.engine.client import EngineSnapshot
from vlmserve.engine.disk_cache import DiskCacheStats
from vlmserve.engine.image_cache import ImageCacheStats
from vlmserve.engine.stats import EngineCounters
from vlmserve.errors import EngineError, QueueFullError
from vlmserve.images import image_token_count
from vlmserve.types import FinishReason, PreparedImage, Prompt, Request, TokenDelta

log = logging.getLogger(__name__)

_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)
_TOKEN_CACHE = 4096  # text parts whose token counts are remembered (history re-counts)


class RemoteEngineClient:
    def __init__(self, handle: DeploymentHandle, info: BackendInfo, config: EngineConfig,
                 board: ray.actor.ActorHandle) -> None:
        self._handle = handle
        self._info = info
        self._config = config
        self._board = board
        self._streams: dict[str, object] = {}
        self._aborted: set[str] = set()
        self._token_counts: dict[str, int] = {}
        self._posts: list[ReplicaPost] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_board, name="vlmserve-board-read",
                                        daemon=True)
        self._reader.start()

    @property
    def info(self) -> BackendInfo:
        return self._info

    # ---- generation ------------------------------------------------------------------
    async def generate(self, request: Request) -> AsyncIterator[TokenDelta]:
        key = affinity_key(request)
        rid = request.request_id
        sent = False
        tries = 0
        try:
            while True:
                tries += 1
                stream = self._handle.options(stream=True).generate.remote(
                    request, **{AFFINITY_KWARG: key})
                self._streams[rid] = stream
                try:
                    async for delta in stream:  # type: ignore[attr-defined]
                        sent = True
                        yield delta
                        if delta.finished:
                            return
                    raise ReplicaLostError("the replica ended the stream without finishing")
                except BackPressureError:
                    raise QueueFullError("every replica's queue is full; retry shortly") from None
                except (*_LOST, ReplicaLostError) as exc:
                    if rid in self._aborted:
                        yield TokenDelta(rid, finish_reason=FinishReason.ABORT)
                        return
                    if not sent and tries == 1:
                        log.warning("replica lost before %s streamed anything (%s); retrying",
                                    rid, type(exc).__name__)
                        continue
                    yield TokenDelta(rid, finish_reason=FinishReason.ERROR, error=ReplicaLostError(
                        "the engine replica serving this request stopped; a new one is "
                        "starting. Retry the request (a session keeps its history)"))
                    return
                except (asyncio.CancelledError, RequestCancelledError):
                    if rid not in self._aborted or _cancelling():
                        raise
                    yield TokenDelta(rid, finish_reason=FinishReason.ABORT)
                    return
                except ray.exceptions.RayError as exc:  # a bug on the replica: a 500
                    log.error("engine replica failed on %s: %s", rid, exc)
                    yield TokenDelta(rid, finish_reason=FinishReason.ERROR, error=EngineError(
                        f"the engine replica failed ({type(exc).__name__}); see its log"))
                    return
        finally:
            stream = self._streams.pop(rid, None)
            self._aborted.discard(rid)
            if stream is not None:
                stream.cancel()  # type: ignore[attr-defined]  # no-op once finished

    def abort(self, request_id: str) -> None:
        """Stop a request from the server's side: its stream ends with an ABORT delta."""
        stream = self._streams.get(request_id)
        if stream is not None:
            self._aborted.add(request_id)
            stream.cancel()  # type: ignore[attr-defined]

    # ---- counting (called from worker threads: blocking handle calls are fine) --------
    def count_prompt_tokens(self, prompt: Prompt) -> int:
        texts = [p for p in prompt.parts if isinstance(p, str)]
        missing = [t for t in dict.fromkeys(texts) if t not in self._token_counts]
        if missing:
            counts = self._handle.count_text_tokens.remote(missing).result()
            if len(self._token_counts) + len(missing) > _TOKEN_CACHE:
                self._token_counts.clear()
            self._token_counts.update(zip(missing, counts, strict=True))
        total = sum(self._token_counts.get(t, 0) for t in texts)
        for part in prompt.parts:
            if isinstance(part, PreparedImage):
                total += self.image_tokens(part.width, part.height) + 2
        return total

    def image_tokens(self, width: int, height: int) -> int:
        kwargs = {}
        if self._config.image_min_tokens:
            kwargs["min_tokens"] = self._config.image_min_tokens
        if self._config.image_max_tokens:
            kwargs["max_tokens"] = self._config.image_max_tokens
        return image_token_count(width, height, **kwargs)

    # ---- figures -----------------------------------------------------------------------
    def posts(self) -> list[ReplicaPost]:
        """The replicas' latest posts (fresh or not)."""
        return list(self._posts)

    def fresh_posts(self) -> list[ReplicaPost]:
        now = time.time()
        return [p for p in self._posts if now - p.posted_at <= STALE_S]

    def snapshot(self) -> EngineSnapshot:
        """The replicas' figures summed (gauges too: queue and slots of the deployment)."""
        return sum_snapshots([p.snapshot for p in self.fresh_posts()])

    def _read_board(self) -> None:
        while not self._stop.is_set():
            try:
                self._posts = ray.get(self._board.read.remote(), timeout=5)
            except Exception:
                log.warning("could not read the replica board", exc_info=True)
            self._stop.wait(REPORT_EVERY_S / 2)

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._reader.join(timeout)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _sum(items: Sequence[object], cls: type) -> object:
    values = {}
    for f in fields(cls):
        got = [getattr(i, f.name) for i in items]
        if f.name.startswith("max_"):
            values[f.name] = max(got, default=0)
        elif got and isinstance(got[0], Counter):
            values[f.name] = sum(got, Counter())
        else:
            values[f.name] = sum(got)
    return cls(**values)


def sum_snapshots(snaps: Sequence[EngineSnapshot]) -> EngineSnapshot:
    """One snapshot for the whole deployment (an empty one when no replica is up)."""
    disks = [s.disk_cache for s in snaps if s.disk_cache is not None]
    counters = _sum([s.counters for s in snaps], EngineCounters)
    cache = _sum([s.image_cache for s in snaps], ImageCacheStats)
    disk = _sum(disks, DiskCacheStats) if disks else None
    return replace(snaps[0], counters=counters, image_cache=cache, disk_cache=disk,
                   queue_depth=sum(s.queue_depth for s in snaps),
                   busy_slots=sum(s.busy_slots for s in snaps),
                   n_slots=sum(s.n_slots for s in snaps)) if snaps else EngineSnapshot(
        EngineCounters(), ImageCacheStats(0, 0, 0, 0, 0, 0), None, 0, 0, 0)

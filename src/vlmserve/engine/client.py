"""EngineClient: how the HTTP layer, the page and the CLI talk to the engine thread."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from vlmserve.engine.backend import BackendInfo
from vlmserve.engine.disk_cache import DiskCacheStats, DiskEmbeddingCache
from vlmserve.engine.image_cache import ImageCacheStats
from vlmserve.engine.llamacpp.backend import LlamaBackend
from vlmserve.engine.loop import EngineLoop
from vlmserve.engine.stats import EngineCounters
from vlmserve.images import image_token_count
from vlmserve.types import PreparedClip, PreparedImage, Prompt, Request, TokenDelta, UserText

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSnapshot:
    """A point-in-time view for /metrics and the benchmark."""

    counters: EngineCounters
    image_cache: ImageCacheStats
    disk_cache: DiskCacheStats | None  # None: no disk tier (--image-cache-dir unset)
    queue_depth: int
    busy_slots: int
    n_slots: int


class EngineClient:
    """Submit requests, stream their deltas, abort them, read stats.

    ``generate`` is for asyncio code (FastAPI, Gradio); ``generate_sync`` for
    plain threads (CLI). Leaving either iterator early aborts the request, so a
    client that disconnects frees its slot at the next engine step.
    """

    def __init__(self, backend: LlamaBackend, loop: EngineLoop,
                 disk_cache: DiskEmbeddingCache | None = None) -> None:
        self._backend = backend
        self._loop = loop
        self._disk_cache = disk_cache

    @property
    def info(self) -> BackendInfo:
        return self._backend.info

    async def generate(self, request: Request) -> AsyncIterator[TokenDelta]:
        aio = asyncio.get_running_loop()
        deltas: asyncio.Queue[TokenDelta] = asyncio.Queue()
        self._loop.submit(request, lambda d: aio.call_soon_threadsafe(deltas.put_nowait, d))
        finished = False
        try:
            while not finished:
                delta = await deltas.get()
                finished = delta.finished
                yield delta
        finally:
            if not finished:
                self._loop.abort(request.request_id)

    def generate_sync(self, request: Request) -> Iterator[TokenDelta]:
        """Submit now (``QueueFullError`` is raised here, not at the first ``next``)."""
        deltas: queue.Queue[TokenDelta] = queue.Queue()
        self._loop.submit(request, deltas.put)
        return self._drain(request.request_id, deltas)

    def _drain(self, request_id: str, deltas: queue.Queue[TokenDelta]) -> Iterator[TokenDelta]:
        finished = False
        try:
            while not finished:
                delta = deltas.get()
                finished = delta.finished
                yield delta
        finally:
            if not finished:
                self._loop.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._loop.abort(request_id)

    def drain(self) -> None:
        """Begin a clean shutdown: new requests are refused and every request without a
        slot ends with ``ShuttingDownError``; running ones go on (see ``end_running``)."""
        self._loop.drain()

    def end_running(self) -> None:
        """End every running request with ``ShuttingDownError`` (the drain ran out)."""
        self._loop.end_running()

    @property
    def idle(self) -> bool:
        """Nothing queued and no slot busy."""
        return self._loop.idle

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """KV cells the prompt will take: text tokens plus each image's tokens and its
        two wrapping tokens (``<|vision_start|>``/``<|vision_end|>``); a clip is one such
        image per frame pair, each after its ``<t.t seconds>`` text. Each text part is
        counted as mtmd tokenizes it: alone, special tokens parsed in template text and not
        in message text. Thread-safe."""
        total = 0
        for part in prompt.parts:
            if isinstance(part, PreparedImage):
                total += self.image_tokens(part.width, part.height) + 2
            elif isinstance(part, PreparedClip):
                for i in range(part.n_pairs):
                    total += len(self._backend.tokenize(part.pair_label(i), True))
                    total += self.image_tokens(part.width, part.height) + 2
            elif isinstance(part, UserText):
                total += len(self._backend.tokenize(part.text, False))
            elif part:
                total += len(self._backend.tokenize(part, True))
        return total

    def image_tokens(self, width: int, height: int) -> int:
        cfg = self._backend.config
        kwargs = {}
        if cfg.image_min_tokens:
            kwargs["min_tokens"] = cfg.image_min_tokens
        if cfg.image_max_tokens:
            kwargs["max_tokens"] = cfg.image_max_tokens
        return image_token_count(width, height, **kwargs)

    def snapshot(self) -> EngineSnapshot:
        """A copy of the counters (the engine thread keeps changing the live ones)."""
        c = self._loop.counters
        counters = dataclasses.replace(c, finished=Counter(c.finished))
        disk = self._disk_cache.stats() if self._disk_cache is not None else None
        return EngineSnapshot(counters, self._loop.image_cache.stats(), disk,
                              self._loop.queue_depth, self._loop.busy_slots,
                              len(self._loop.slots))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine threads and free llama.cpp memory (idempotent).

        If a thread is still inside llama.cpp when the wait runs out, the memory is left
        to the process's exit: freeing it under a running ``llama_decode`` would crash.
        """
        if self._loop.stop(timeout):
            self._backend.close()
        else:
            log.warning("an engine thread did not stop in time; llama.cpp memory is left "
                        "to be freed at exit")

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The engine thread: inbox -> admit -> plan -> run (images, one batched decode) -> sample -> emit.

One thread owns the llama.cpp context (like llama.cpp's server loop and
nano-vllm's engine step). Other threads talk to it only through ``submit`` and
``abort``; results flow back through each request's ``emit`` callback, which
must not block.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from vlmserve.engine.detokenize import IncrementalDetokenizer
from vlmserve.engine.image_cache import ImageCache
from vlmserve.engine.llamacpp.backend import BatchToken, ImageChunk, LlamaBackend, TextChunk
from vlmserve.engine.prefix_cache import (
    ImageUnit,
    cells_in,
    choose_slot,
    position_after,
)
from vlmserve.engine.scheduler import PrefillNeed, plan_step
from vlmserve.engine.slots import Job, Slot, SlotState
from vlmserve.engine.stats import EngineCounters
from vlmserve.errors import ContextOverflowError, QueueFullError, RequestError, VlmserveError
from vlmserve.types import FinishReason, Request, RequestStats, TokenDelta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Submit:
    request: Request
    emit: Callable[[TokenDelta], None]
    t_submit: float


@dataclass(frozen=True)
class _Abort:
    request_id: str


class EngineLoop:
    """Continuous batching over ``n_parallel`` slots of one llama context."""

    def __init__(self, backend: LlamaBackend, image_cache: ImageCache, max_queue: int,
                 prefix_cache: bool = True) -> None:
        self.backend = backend
        self.image_cache = image_cache
        self.max_queue = max_queue
        self.prefix_cache = prefix_cache
        self.counters = EngineCounters()
        self.slots = [Slot(i) for i in range(backend.info.n_parallel)]
        self._inbox: queue.Queue[_Submit | _Abort | None] = queue.Queue()
        self._waiting: deque[_Submit] = deque()
        self._n_queued = 0  # submitted, not yet admitted (guarded by _lock)
        self._lock = threading.Lock()
        self._rotation = 0
        self._running = False
        self._thread: threading.Thread | None = None

    # ---- other threads -------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="vlmserve-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Abort everything in flight and join the thread."""
        if self._thread is None:
            return
        self._running = False
        self._inbox.put(None)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, request: Request, emit: Callable[[TokenDelta], None]) -> None:
        """Queue a request; raises ``QueueFullError`` when ``max_queue`` are already waiting."""
        with self._lock:
            if self._n_queued >= self.max_queue:
                self.counters.rejected += 1
                raise QueueFullError(f"the server is busy: {self._n_queued} requests are already "
                                     "waiting; retry shortly", retry_after_s=2)
            self._n_queued += 1
        self._inbox.put(_Submit(request, emit, time.perf_counter()))

    def abort(self, request_id: str) -> None:
        """Stop a request (queued or running); its stream ends with ``FinishReason.ABORT``."""
        self._inbox.put(_Abort(request_id))

    @property
    def queue_depth(self) -> int:
        return self._n_queued

    @property
    def busy_slots(self) -> int:
        return sum(1 for s in self.slots if s.state is not SlotState.IDLE)

    # ---- engine thread -------------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            try:
                self._step()
            except Exception:  # never let the engine thread die silently
                log.exception("engine step failed")
                self._fail_all("internal engine error; see the server log")
        self._fail_all("the server is shutting down", FinishReason.ABORT)

    def _step(self) -> None:
        self._drain_inbox(block=not self._has_work())
        self._admit()
        decoding = [s.index for s in self.slots if s.state is SlotState.DECODE]
        prefilling = [PrefillNeed(s.index, isinstance(s.job.units[s.job.cursor], ImageUnit),
                                  s.job.text_run())
                      for s in self.slots if s.state is SlotState.PREFILL]
        plan = plan_step(decoding, prefilling, self.backend.config.n_batch, self._rotation)
        self._rotation = plan.next_rotation
        if plan.image_slot is not None:
            self._put_image(self.slots[plan.image_slot])
        self._decode(plan.decode, plan.prefill)

    def _has_work(self) -> bool:
        return bool(self._waiting) or any(s.state is not SlotState.IDLE for s in self.slots)

    def _drain_inbox(self, block: bool) -> None:
        try:
            msg = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(msg, _Submit):
                self._waiting.append(msg)
            elif isinstance(msg, _Abort):
                self._abort(msg.request_id)
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _abort(self, request_id: str) -> None:
        for sub in list(self._waiting):
            if sub.request.request_id == request_id:
                self._waiting.remove(sub)
                self._dequeued()
                self.counters.finished[FinishReason.ABORT] += 1
                sub.emit(TokenDelta(request_id, finish_reason=FinishReason.ABORT,
                                    stats=RequestStats()))
        for slot in self.slots:
            if slot.job is not None and slot.job.request.request_id == request_id:
                self._finish(slot, FinishReason.ABORT)

    def _dequeued(self) -> None:
        with self._lock:
            self._n_queued -= 1

    # ---- admission -----------------------------------------------------------------
    def _admit(self) -> None:
        while self._waiting:
            free = [s for s in self.slots if s.state is SlotState.IDLE]
            if not free:
                return
            sub = self._waiting.popleft()
            self._dequeued()
            job = Job(sub.request, sub.emit, sub.t_submit, t_admit=time.perf_counter())
            try:
                self._prepare(job)
            except VlmserveError as exc:
                job.free()
                self.counters.finished[FinishReason.ERROR] += 1
                sub.emit(TokenDelta(job.request.request_id, finish_reason=FinishReason.ERROR,
                                    error=exc.message, error_status=exc.http_status,
                                    error_code=exc.code, stats=RequestStats()))
                continue
            self._start(job, free)

    def _prepare(self, job: Job) -> None:
        """Tokenize the prompt into units and check it fits a slot."""
        for chunk in self.backend.tokenize_prompt(job.request.prompt):
            if isinstance(chunk, TextChunk):
                job.units.extend(chunk.tokens)
            else:
                job.images[len(job.units)] = chunk
                job.units.append(ImageUnit(chunk.key, chunk.n_tokens, chunk.n_pos))
        if not job.units:
            raise RequestError("the prompt is empty")
        if isinstance(job.units[-1], ImageUnit):
            raise RequestError("the prompt must end with text after the last image")
        limit = self.backend.info.n_ctx_per_slot
        if job.prompt_cells >= limit:
            raise ContextOverflowError(
                f"the prompt needs {job.prompt_cells} tokens but a slot holds {limit}; "
                "shorten the conversation, use a smaller image, or raise --ctx-size")
        params = job.request.sampling
        job.sampler = self.backend.new_sampler(params)
        job.detok = IncrementalDetokenizer(self.backend.token_bytes, params.stop)

    def _start(self, job: Job, free: list[Slot]) -> None:
        choice = choose_slot([(s.index, s.cached, s.last_used) for s in free], job.units)
        slot = self.slots[choice.slot_index]
        reused = choice.reused_units if self.prefix_cache else 0
        if not self.backend.seq_truncate(slot.index, position_after(job.units, reused)):
            reused = 0  # llama.cpp cleared the whole sequence instead
        pos = position_after(job.units, reused)
        slot.keep(reused)
        job.cursor, job.n_past = reused, pos
        job.cached_tokens = cells_in(job.units, reused)
        self.counters.prefix_tokens_reused += job.cached_tokens
        self.counters.admitted += 1
        slot.job, slot.state = job, SlotState.PREFILL

    # ---- running -------------------------------------------------------------------
    def _put_image(self, slot: Slot) -> None:
        job = slot.job
        unit = job.units[job.cursor]
        chunk: ImageChunk = job.images[job.cursor]
        try:
            embd = self.image_cache.acquire(unit.key)
            if embd is not None:
                job.pinned.append(unit.key)
                job.image_cache_hits += 1
            else:
                t0 = time.perf_counter()
                embd = self.backend.encode_image(chunk)
                job.image_encode_ms += (time.perf_counter() - t0) * 1000
                if self.image_cache.put_acquired(unit.key, embd):
                    job.pinned.append(unit.key)
            job.n_past = self.backend.decode_image(slot.index, chunk, embd, job.n_past)
        except VlmserveError as exc:
            self._fail_slot(slot, exc.message)
            return
        slot.add([unit])
        job.cursor += 1

    def _decode(self, decode: tuple[int, ...], prefill: tuple[tuple[int, int], ...]) -> None:
        batch: list[BatchToken] = []
        sample_at: list[tuple[Slot, int]] = []
        for idx in decode:
            slot = self.slots[idx]
            job = slot.job
            batch.append(BatchToken(idx, job.pending_token, job.n_past, True))
            sample_at.append((slot, len(batch) - 1))
        for idx, n in prefill:
            slot = self.slots[idx]
            job = slot.job
            for k in range(n):
                last = job.cursor + k == len(job.units) - 1
                batch.append(BatchToken(idx, job.units[job.cursor + k], job.n_past + k, last))
            if job.cursor + n == len(job.units):
                sample_at.append((slot, len(batch) - 1))
        if not batch:
            return
        try:
            self.backend.decode(batch)
        except VlmserveError as exc:
            for slot in {self.slots[t.seq_id].index: self.slots[t.seq_id] for t in batch}.values():
                self._fail_slot(slot, exc.message)
            return
        self.counters.observe_batch(len(batch))
        for idx in decode:  # their pending token is now in KV
            slot = self.slots[idx]
            slot.add([slot.job.pending_token])
            slot.job.n_past += 1
            slot.job.pending_token = None
        for idx, n in prefill:
            slot = self.slots[idx]
            job = slot.job
            slot.add(job.units[job.cursor:job.cursor + n])
            job.cursor += n
            job.n_past += n
            self.counters.prompt_tokens_processed += n
        for slot, i in sample_at:
            job = slot.job
            if slot.state is SlotState.PREFILL:
                slot.state = SlotState.DECODE
                job.t_prompt_done = time.perf_counter()
            self._accept(slot, self.backend.sample(job.sampler, i))

    def _accept(self, slot: Slot, token: int) -> None:
        job = slot.job
        if job.n_completion == 0:
            job.t_first = time.perf_counter()
        job.n_completion += 1
        self.counters.completion_tokens += 1
        if self.backend.is_eog(token):
            self._finish(slot, FinishReason.STOP)
            return
        job.pending_ids.append(token)
        text = job.detok.push(token)
        if text:
            job.emit(TokenDelta(job.request.request_id, text, tuple(job.pending_ids)))
            job.pending_ids.clear()
        if job.detok.stopped:
            self._finish(slot, FinishReason.STOP)
        elif job.n_completion >= job.request.sampling.max_tokens:
            self._finish(slot, FinishReason.LENGTH)
        elif slot.cells + 1 >= self.backend.info.n_ctx_per_slot:
            self._finish(slot, FinishReason.LENGTH)  # the slot's context is full
        else:
            job.pending_token = token

    # ---- finishing -----------------------------------------------------------------
    def _finish(self, slot: Slot, reason: FinishReason, error: str | None = None,
                error_status: int = 0, error_code: str = "") -> None:
        job = slot.job
        tail = job.detok.flush() if job.detok and error is None else ""
        now = time.perf_counter()
        stats = RequestStats(
            prompt_tokens=job.prompt_cells,
            image_tokens=job.image_cells,
            cached_tokens=job.cached_tokens,
            completion_tokens=job.n_completion,
            images=len(job.images),
            image_cache_hits=job.image_cache_hits,
            image_encode_ms=job.image_encode_ms,
            queue_ms=(job.t_admit - job.t_submit) * 1000,
            prefill_ms=((job.t_prompt_done or now) - job.t_admit) * 1000,
            ttft_ms=((job.t_first or now) - job.t_submit) * 1000 if job.t_first else 0.0,
            decode_ms=(now - job.t_first) * 1000 if job.t_first else 0.0,
            total_ms=(now - job.t_submit) * 1000,
        )
        for key in job.pinned:
            self.image_cache.release(key)
        job.free()
        slot.job, slot.state, slot.last_used = None, SlotState.IDLE, time.monotonic()
        self.counters.finished[reason] += 1
        job.emit(TokenDelta(job.request.request_id, tail, tuple(job.pending_ids),
                            finish_reason=reason, stats=stats, error=error,
                            error_status=error_status, error_code=error_code))

    def _fail_slot(self, slot: Slot, message: str) -> None:
        """A llama.cpp call failed for this slot: its KV is unknown, so clear it."""
        slot.keep(0)
        self.backend.seq_truncate(slot.index, 0)
        self._finish(slot, FinishReason.ERROR, error=message, error_status=500,
                     error_code="engine_error")

    def _fail_all(self, message: str, reason: FinishReason = FinishReason.ERROR) -> None:
        for slot in self.slots:
            if slot.job is not None:
                if reason is FinishReason.ERROR:
                    self._fail_slot(slot, message)
                else:
                    self._finish(slot, reason, error=message)
        while self._waiting:
            sub = self._waiting.popleft()
            self._dequeued()
            sub.emit(TokenDelta(sub.request.request_id, finish_reason=reason, error=message,
                                stats=RequestStats()))

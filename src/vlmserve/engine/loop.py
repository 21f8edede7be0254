"""The engine thread: inbox -> admit -> plan -> decode tokens, sample -> image slices -> emit.

One thread owns the llama.cpp context (like llama.cpp's server loop and nano-vllm's
engine step) and does nothing slow but forward passes: prompts are tokenized and
images encoded by the vision stage (``engine/vision.py``), whose results arrive on
the same inbox as new requests and aborts. A request whose image is still being
encoded waits in its own slot; an encoded image goes into KV a slice per step, after
that step's decode, so running answers keep streaming while a picture is read.
Other threads talk to the loop only through ``submit`` and ``abort``; results flow
back through each request's ``emit`` callback, which must not block.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vlmserve.engine.backend import BatchToken, DecodeBackend, EmbdSlice, ImageChunk, TextChunk
from vlmserve.engine.detokenize import IncrementalDetokenizer
from vlmserve.engine.image_cache import ImageCache
from vlmserve.engine.prefix_cache import ImageUnit, cells_in, choose_slot, position_after
from vlmserve.engine.scheduler import PrefillNeed, StepPlan, plan_step
from vlmserve.engine.slots import Job, Slot, SlotState
from vlmserve.engine.stats import EngineCounters
from vlmserve.engine.vision import EmbeddingStore, Encoded, Prepared, VisionStage
from vlmserve.errors import (
    ContextOverflowError,
    EngineError,
    QueueFullError,
    RequestError,
    ShuttingDownError,
    VlmserveError,
)
from vlmserve.types import (
    FinishReason,
    Phase,
    PhaseReport,
    Request,
    RequestStats,
    TokenDelta,
    TokenLogprob,
)

log = logging.getLogger(__name__)

Inbox = queue.Queue  # of _Submit | _Abort | _Drain | _EndRunning | Prepared | Encoded | None


@dataclass(frozen=True)
class _Submit:
    request: Request
    emit: Callable[[TokenDelta], None]
    t_submit: float


@dataclass(frozen=True)
class _Abort:
    request_id: str


@dataclass(frozen=True)
class _Drain:
    """Stop admitting: end every request that has no slot yet."""


@dataclass(frozen=True)
class _EndRunning:
    """End every request that still has a slot (the drain ran out of time)."""


class EngineLoop:
    """Continuous batching over the backend's slots, fed by a vision stage.

    ``inbox`` is shared with ``vision``, which delivers its results there; the
    factory (``engine/factory.py``) wires the two together.
    """

    def __init__(self, backend: DecodeBackend, vision: VisionStage, inbox: Inbox,
                 image_cache: ImageCache, max_queue: int, prefix_cache: bool = True,
                 image_slice: int = 64, prefix_store: EmbeddingStore | None = None) -> None:
        self.backend = backend
        self.vision = vision
        self.image_cache = image_cache
        self.max_queue = max_queue
        self.prefix_cache = prefix_cache
        self.n_batch = backend.info.n_batch
        self.image_slice = min(image_slice, self.n_batch)
        self.counters = EngineCounters()
        # The disk tier also keeps the KV of each prompt prefix that ends with an image,
        # so a restarted server skips that image's prefill too, not only its encode.
        self._prefix_store = prefix_store
        info = backend.info
        self._prefix_ns = f"{info.model_path}:{info.model_size_bytes}:{info.mmproj_id}"
        self.slots = [Slot(i) for i in range(backend.info.n_parallel)]
        self._inbox = inbox
        self._preparing: dict[str, Job] = {}  # at the vision stage's prepare thread
        self._waiting: deque[Job] = deque()  # prepared, waiting for a free slot
        self._orphans: dict[tuple[str, int], ImageChunk] = {}  # lent chunks of ended jobs
        self._n_queued = 0  # submitted, not yet admitted (guarded by _lock)
        self._draining = False  # submit refuses (guarded by _lock)
        self._drained = False  # the engine thread has seen the drain: end late arrivals
        self._lock = threading.Lock()
        self._rotation = 0
        self._idle = True  # the last step found nothing to run: wait on the inbox
        self._running = False
        self._thread: threading.Thread | None = None

    # ---- other threads -------------------------------------------------------------
    def start(self) -> None:
        self.vision.start()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="vlmserve-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Abort everything in flight and stop the threads.

        Returns False when a thread is still inside llama.cpp after ``timeout``: then
        the backend must not be freed under it.
        """
        joined = True
        if self._thread is not None:
            self._running = False
            self._inbox.put(None)
            self._thread.join(timeout)
            joined = not self._thread.is_alive()
            if joined:
                self._thread = None
        return self.vision.stop(timeout) and joined

    def submit(self, request: Request, emit: Callable[[TokenDelta], None]) -> None:
        """Queue a request; raises ``QueueFullError`` when ``max_queue`` are already waiting,
        ``ShuttingDownError`` once ``drain`` was called."""
        with self._lock:
            if self._draining:
                self.counters.rejected += 1
                raise ShuttingDownError()
            if self._n_queued >= self.max_queue:
                self.counters.rejected += 1
                raise QueueFullError(f"the server is busy: {self._n_queued} requests are already "
                                     "waiting; retry shortly", retry_after_s=2)
            self._n_queued += 1
        self._inbox.put(_Submit(request, emit, time.perf_counter()))

    def abort(self, request_id: str) -> None:
        """Stop a request (queued or running); its stream ends with ``FinishReason.ABORT``."""
        self._inbox.put(_Abort(request_id))

    def drain(self) -> None:
        """Begin a clean shutdown: refuse new requests, end every request that has no slot
        yet with ``ShuttingDownError``; running ones go on until ``end_running``."""
        with self._lock:
            self._draining = True
        self._inbox.put(_Drain())

    def end_running(self) -> None:
        """End every running request with ``ShuttingDownError`` (after a drain ran out)."""
        self._inbox.put(_EndRunning())

    @property
    def idle(self) -> bool:
        """Nothing queued and no slot busy (what a drain waits for)."""
        return self._n_queued == 0 and self.busy_slots == 0

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
                self._fail_all(EngineError("internal engine error; see the server log"))
        self._fail_all(EngineError("the server is shutting down"), FinishReason.ABORT)

    def _step(self) -> None:
        self._drain_inbox(block=self._idle)
        self._admit()
        self._report_phases()
        plan = self._plan()
        self._rotation = plan.next_rotation
        self._idle = plan.empty
        if plan.decode or plan.prefill:
            self._run_tokens(plan)
        if plan.images:
            self._run_image_slices(plan.images)

    def _plan(self) -> StepPlan:
        decoding = [s.index for s in self.slots if s.state is SlotState.DECODE]
        prefilling = [self._need(s) for s in self.slots if s.state is SlotState.PREFILL]
        # Nobody waits on a decode: an image may take a whole batch per step, as before.
        image_budget = self.image_slice if decoding else self.n_batch
        return plan_step(decoding, prefilling, self.n_batch, image_budget, self._rotation)

    @staticmethod
    def _need(slot: Slot) -> PrefillNeed:
        job = slot.job
        unit = job.units[job.cursor]
        if isinstance(unit, ImageUnit):
            return PrefillNeed(slot.index, image_cells=unit.n_tokens - job.image_done,
                               image_ready=job.cursor in job.embeddings, arrival=job.t_submit)
        return PrefillNeed(slot.index, text_run=job.text_run())

    def _drain_inbox(self, block: bool) -> None:
        try:
            msg = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(msg, _Submit):
                self._on_submit(msg)
            elif isinstance(msg, Prepared):
                self._on_prepared(msg)
            elif isinstance(msg, Encoded):
                self._on_encoded(msg)
            elif isinstance(msg, _Abort):
                self._abort(msg.request_id)
            elif isinstance(msg, _Drain):
                self._drained = True
                self._fail_unstarted(ShuttingDownError())
            elif isinstance(msg, _EndRunning):
                self._fail_all(ShuttingDownError())
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _dequeued(self) -> None:
        with self._lock:
            self._n_queued -= 1

    # ---- arrival: submit -> prepared -> waiting --------------------------------------------
    def _on_submit(self, sub: _Submit) -> None:
        job = Job(sub.request, sub.emit, sub.t_submit)
        if self._drained:  # submitted just before the drain, arrived just after it
            self._dequeued()
            self._end_unstarted(job, FinishReason.ERROR, ShuttingDownError())
            return
        self._preparing[job.request_id] = job
        self.vision.prepare(job.request_id, job.request.prompt)

    def _on_prepared(self, msg: Prepared) -> None:
        job = self._preparing.pop(msg.request_id, None)
        if job is None:  # aborted meanwhile
            for chunk in msg.chunks or ():
                if not isinstance(chunk, TextChunk):
                    chunk.free()
            return
        try:
            if msg.error is not None:
                raise msg.error
            self._build(job, msg.chunks or [])
        except Exception as exc:  # the job is in no list now: end it here, whatever failed
            if not isinstance(exc, VlmserveError):
                log.exception("setting up a request failed")
                exc = EngineError("the request could not be set up; see the server log")
            owned = {id(c) for c in job.images.values()}
            for chunk in msg.chunks or ():
                if not isinstance(chunk, TextChunk) and id(chunk) not in owned:
                    chunk.free()  # not handed to the job before the failure
            self._dequeued()
            self._end_unstarted(job, FinishReason.ERROR, exc)
            return
        self._waiting.append(job)
        held = {u.key for s in self.slots for u in s.cached if isinstance(u, ImageUnit)}
        on_disk = self._stored_prefix_end(job)
        for i, chunk in job.images.items():
            # else a slot's KV, or the disk tier's KV of the prefix, probably has it:
            # decide at admission
            if chunk.key not in held and i >= on_disk:
                self._want_image(job, i)

    def _build(self, job: Job, chunks: list) -> None:
        """The prompt as units; check it fits a slot; make the sampler and detokenizer."""
        for chunk in chunks:
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

    def _want_image(self, job: Job, index: int) -> None:
        """Get the embeddings of the image at unit ``index``: RAM cache now, else ask the
        vision stage (disk tier or encoder) and let the request wait for them."""
        if index in job.embeddings or index in job.encoding:
            return
        chunk = job.images[index]
        embd = self.image_cache.acquire(chunk.key)
        if embd is not None:
            job.pinned.append(chunk.key)
            job.image_cache_hits += 1
            job.embeddings[index] = embd
            return
        job.encoding.add(index)
        self.vision.encode(job.request_id, index, chunk)

    def _on_encoded(self, msg: Encoded) -> None:
        orphan = self._orphans.pop((msg.request_id, msg.unit_index), None)
        if orphan is not None:  # its request ended while the chunk was lent
            orphan.free()
            if not any(rid == msg.request_id for rid, _ in self._orphans):
                self.vision.forget(msg.request_id)
            return
        job = self._find(msg.request_id)
        if job is None or msg.unit_index not in job.encoding:
            return
        job.encoding.discard(msg.unit_index)
        if msg.error is not None:
            self._fail_job(job, msg.error)
            return
        if msg.embd is None:
            return
        key = job.images[msg.unit_index].key
        if self.image_cache.put_acquired(key, msg.embd):
            job.pinned.append(key)
        job.embeddings[msg.unit_index] = msg.embd
        job.image_encode_ms += msg.encode_ms
        if msg.from_disk:
            job.image_disk_hits += 1
            self.counters.image_disk_hits += 1
        else:
            self.counters.images_encoded += 1

    def _find(self, request_id: str) -> Job | None:
        for slot in self.slots:
            if slot.job is not None and slot.job.request_id == request_id:
                return slot.job
        return next((j for j in self._waiting if j.request_id == request_id), None)

    # ---- phases (only for requests that ask) ------------------------------------------
    def _report_phases(self) -> None:
        """Tell each waiting request that asked (``Request.report_phases``) its phase when
        it changed: queued (and where in line), encoding its picture, reading the prompt.
        Once per step after admission, so every transition of the step is seen."""
        now = time.perf_counter()
        for position, job in enumerate(self._waiting, 1):
            self._report(job, Phase.QUEUED, position, now)
        for slot in self.slots:
            if slot.state is SlotState.PREFILL:
                job = slot.job
                self._report(job, Phase.ENCODING if job.encoding else Phase.PREFILL, 0, now)

    @staticmethod
    def _report(job: Job, phase: Phase, position: int, now: float) -> None:
        if not job.request.report_phases or job.phase == (phase, position):
            return
        job.phase = (phase, position)
        report = PhaseReport(phase, position, (now - job.t_submit) * 1000)
        job.emit(TokenDelta(job.request_id, phase=report))

    # ---- admission -----------------------------------------------------------------
    def _admit(self) -> None:
        while self._waiting:
            free = [s for s in self.slots if s.state is SlotState.IDLE]
            if not free:
                return
            job = self._waiting.popleft()
            self._dequeued()
            job.t_admit = time.perf_counter()
            self._start(job, free)

    def _start(self, job: Job, free: list[Slot]) -> None:
        choice = choose_slot([(s.index, s.cached, s.last_used) for s in free], job.units)
        slot = self.slots[choice.slot_index]
        reused = choice.reused_units if self.prefix_cache else 0
        restored = self._restore_prefix(slot, job, reused) if self.prefix_cache else None
        if restored is not None:
            reused = restored  # 0: the restore failed and the sequence was cleared
        elif not self.backend.seq_truncate(slot.index, position_after(job.units, reused)):
            reused = 0  # llama.cpp cleared the whole sequence instead
        pos = position_after(job.units, reused)
        slot.keep(reused)
        job.cursor, job.n_past = reused, pos
        job.cached_tokens = cells_in(job.units, reused)
        self.counters.prefix_tokens_reused += job.cached_tokens
        self.counters.admitted += 1
        slot.job, slot.state = job, SlotState.PREFILL
        for i in job.images:
            if i >= reused:
                self._want_image(job, i)

    def _prefix_key(self, units: list, n: int) -> str:
        h = hashlib.sha256(self._prefix_ns.encode())
        h.update(repr(tuple(units[:n])).encode())
        return "kv:" + h.hexdigest()

    def _stored_prefix_end(self, job: Job) -> int:
        """How many leading units the disk tier's longest stored prefix covers (0: none)."""
        if self._prefix_store is None or not self.prefix_cache:
            return 0
        for i in sorted(job.images, reverse=True):
            if self._prefix_key(job.units, i + 1) in self._prefix_store:
                return i + 1
        return 0

    def _restore_prefix(self, slot: Slot, job: Job, reused: int) -> int | None:
        """Load the longest prompt prefix ending with an image, beyond what the slot holds,
        whose KV the disk tier has; the number of units now in KV, or None (not found)."""
        if self._prefix_store is None:
            return None
        for i in sorted((i for i in job.images if i >= reused), reverse=True):
            key = self._prefix_key(job.units, i + 1)
            if key not in self._prefix_store:
                continue
            state = self._prefix_store.get(key)
            if state is None or state.dtype != np.uint8:
                continue
            slot.keep(0)
            if not self.backend.set_seq_state(slot.index, state):
                log.warning("llama.cpp refused a stored KV prefix; reading the prompt instead")
                return 0
            slot.add(job.units[:i + 1])
            n_images = sum(1 for u in job.units[reused:i + 1] if isinstance(u, ImageUnit))
            job.image_disk_hits += n_images
            self.counters.image_disk_hits += n_images
            self.counters.prefix_disk_hits += 1
            return i + 1
        return None

    def _store_prefix(self, slot: Slot, job: Job) -> None:
        """Keep the KV of the prompt so far (it just ended with an image) on disk."""
        key = self._prefix_key(job.units, job.cursor)
        if key not in self._prefix_store:
            self.vision.store(key, self.backend.seq_state(slot.index))

    # ---- running -------------------------------------------------------------------
    def _run_tokens(self, plan: StepPlan) -> None:
        """The step's tokens in llama_decode calls of at most ``n_batch``; each call's
        logits are sampled before the next call overwrites them."""
        batch: list[BatchToken] = []
        sample_at: list[tuple[Slot, int]] = []
        for idx in plan.decode:
            job = self.slots[idx].job
            batch.append(BatchToken(idx, job.pending_token, job.n_past, True))
            sample_at.append((self.slots[idx], len(batch) - 1))
        for idx, n in plan.prefill:
            job = self.slots[idx].job
            for k in range(n):
                last = job.cursor + k == len(job.units) - 1
                batch.append(BatchToken(idx, job.units[job.cursor + k], job.n_past + k, last))
            if job.cursor + n == len(job.units):
                sample_at.append((self.slots[idx], len(batch) - 1))
        self._account_tokens(plan)
        for start in range(0, len(batch), self.n_batch):
            part = batch[start:start + self.n_batch]
            try:
                self.backend.decode(part)
            except VlmserveError as exc:
                for t in batch[start:]:
                    if self.slots[t.seq_id].job is not None:
                        self._fail_slot(self.slots[t.seq_id], exc)
                return
            self.counters.observe_batch(len(part))
            for slot, i in sample_at:
                if start <= i < start + len(part) and slot.job is not None:
                    job = slot.job
                    if slot.state is SlotState.PREFILL:
                        slot.state = SlotState.DECODE
                        job.t_prompt_done = time.perf_counter()
                    token = self.backend.sample(job.sampler, i - start)
                    if job.request.sampling.logprobs is not None:  # only when asked
                        self._note_logprob(job, i - start, token)
                    self._accept(slot, token)

    def _note_logprob(self, job: Job, batch_index: int, token: int) -> None:
        """Keep the sampled token's logprob (and the top alternatives) for its delta."""
        if self.backend.is_eog(token):
            return  # the end-of-turn token is not output, so it has no entry
        n_top = job.request.sampling.logprobs or 0
        value, top = self.backend.logprobs(batch_index, token, n_top)
        token_bytes = self.backend.token_bytes
        job.pending_logprobs.append(TokenLogprob(
            token, token_bytes(token), value, tuple((t, token_bytes(t), v) for t, v in top)))

    def _account_tokens(self, plan: StepPlan) -> None:
        """What the slots' KV will hold once the step's tokens are in."""
        for idx in plan.decode:
            slot = self.slots[idx]
            slot.add([slot.job.pending_token])
            slot.job.n_past += 1
            slot.job.pending_token = None
        for idx, n in plan.prefill:
            slot = self.slots[idx]
            job = slot.job
            slot.add(job.units[job.cursor:job.cursor + n])
            job.cursor += n
            job.n_past += n
            self.counters.prompt_tokens_processed += n

    def _run_image_slices(self, images: tuple[tuple[int, int], ...]) -> None:
        """One llama_decode over the next slice of each planned image.

        A ``VlmserveError`` on the way (the positions of a chunk, the decode) ends the
        requests it concerns with that error, its own status included.
        """
        slices: list[EmbdSlice] = []
        for idx, n in images:
            job = self.slots[idx].job
            try:
                if job.image_pos is None:
                    job.image_pos = job.images[job.cursor].positions(job.n_past)
            except VlmserveError as exc:
                self._fail_slot(self.slots[idx], exc)
                continue
            a, b = job.image_done, job.image_done + n
            slices.append(EmbdSlice(idx, job.embeddings[job.cursor][a:b], job.image_pos[a:b]))
        images = tuple((idx, n) for idx, n in images if self.slots[idx].job is not None)
        if not images:
            return
        try:
            self.backend.decode_embeddings(slices)
        except VlmserveError as exc:
            for idx, _ in images:
                self._fail_slot(self.slots[idx], exc)
            return
        self.counters.image_slices += 1
        for idx, n in images:
            slot = self.slots[idx]
            job = slot.job
            job.image_done += n
            unit = job.units[job.cursor]
            if job.image_done == unit.n_tokens:
                slot.add([unit])
                del job.embeddings[job.cursor]
                job.cursor += 1
                job.n_past += unit.n_pos
                job.image_done, job.image_pos = 0, None
                if self._prefix_store is not None:
                    self._store_prefix(slot, job)
            self.counters.prompt_tokens_processed += n

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
            job.emit(TokenDelta(job.request_id, text, tuple(job.pending_ids),
                                logprobs=tuple(job.pending_logprobs)))
            job.pending_ids.clear()
            job.pending_logprobs.clear()
        if job.detok.stopped:
            self._finish(slot, FinishReason.STOP)
        elif job.n_completion >= job.request.sampling.max_tokens:
            self._finish(slot, FinishReason.LENGTH)
        elif slot.cells + 1 >= self.backend.info.n_ctx_per_slot:
            self._finish(slot, FinishReason.LENGTH)  # the slot's context is full
        else:
            job.pending_token = token

    # ---- finishing -----------------------------------------------------------------
    def _abort(self, request_id: str) -> None:
        job = self._preparing.pop(request_id, None)
        if job is not None:  # its chunks are freed when they arrive (_on_prepared)
            self._dequeued()
            self._end_unstarted(job, FinishReason.ABORT)
            return
        for job in list(self._waiting):
            if job.request_id == request_id:
                self._waiting.remove(job)
                self._dequeued()
                self._end_unstarted(job, FinishReason.ABORT)
        for slot in self.slots:
            if slot.job is not None and slot.job.request_id == request_id:
                self._finish(slot, FinishReason.ABORT)

    def _release(self, job: Job) -> None:
        """Unpin the job's cached images and free what it owns; chunks still at the
        vision stage are kept until they come back."""
        for key in job.pinned:
            self.image_cache.release(key)
        job.pinned.clear()
        lent = job.free()
        if lent:
            self.vision.cancel(job.request_id)
            for i, chunk in lent.items():
                self._orphans[(job.request_id, i)] = chunk
        job.encoding.clear()

    def _end_unstarted(self, job: Job, reason: FinishReason,
                       error: VlmserveError | None = None) -> None:
        """End a job that never had a slot (failed or aborted while preparing or waiting).

        A job still at the prepare thread owns nothing yet, so releasing it is a no-op."""
        self._release(job)
        self.counters.finished[reason] += 1
        job.emit(TokenDelta(job.request_id, finish_reason=reason, stats=RequestStats(),
                            error=error))

    def _finish(self, slot: Slot, reason: FinishReason,
                error: VlmserveError | None = None) -> None:
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
            image_disk_hits=job.image_disk_hits,
            image_encode_ms=job.image_encode_ms,
            queue_ms=(job.t_admit - job.t_submit) * 1000,
            prefill_ms=((job.t_prompt_done or now) - job.t_admit) * 1000,
            ttft_ms=((job.t_first or now) - job.t_submit) * 1000 if job.t_first else 0.0,
            decode_ms=(now - job.t_first) * 1000 if job.t_first else 0.0,
            total_ms=(now - job.t_submit) * 1000,
        )
        self._release(job)
        slot.job, slot.state, slot.last_used = None, SlotState.IDLE, time.monotonic()
        self.counters.finished[reason] += 1
        job.emit(TokenDelta(job.request_id, tail, tuple(job.pending_ids),
                            logprobs=tuple(job.pending_logprobs),
                            finish_reason=reason, stats=stats, error=error))

    def _fail_slot(self, slot: Slot, error: VlmserveError) -> None:
        """A call failed for this slot: its KV is unknown, so clear it."""
        slot.keep(0)
        self.backend.seq_truncate(slot.index, 0)
        self._finish(slot, FinishReason.ERROR, error)

    def _fail_job(self, job: Job, error: VlmserveError) -> None:
        """Fail one request wherever it is (in a slot or still waiting for one)."""
        for slot in self.slots:
            if slot.job is job:
                self._fail_slot(slot, error)
                return
        if job in self._waiting:
            self._waiting.remove(job)
            self._dequeued()
            self._end_unstarted(job, FinishReason.ERROR, error)

    def _fail_all(self, error: VlmserveError, reason: FinishReason = FinishReason.ERROR) -> None:
        for slot in self.slots:
            if slot.job is not None:
                if reason is FinishReason.ERROR:
                    self._fail_slot(slot, error)
                else:
                    self._finish(slot, reason, error)
        self._fail_unstarted(error, reason)

    def _fail_unstarted(self, error: VlmserveError,
                        reason: FinishReason = FinishReason.ERROR) -> None:
        """End every request without a slot: waiting for one, or still being prepared."""
        while self._waiting:
            self._dequeued()
            self._end_unstarted(self._waiting.popleft(), reason, error)
        for job in self._preparing.values():
            self._dequeued()
            self._end_unstarted(job, reason, error)
        self._preparing.clear()


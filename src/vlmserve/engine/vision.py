"""The vision stage: prompts become chunks, and images become embeddings, off the engine thread.

Two worker threads, each owning what it calls:
  * the *prepare* thread tokenizes prompts (``mtmd_tokenize`` preprocesses the pixels
    to the encoder's grid; llama.cpp documents it as thread-safe on a shared context);
  * the *encoder* thread looks an image up in the disk tier, else runs the vision
    encoder (``mtmd_encode_chunk``), and writes new embeddings to the disk tier.
The engine thread never waits for either: results come back as messages on its inbox
(``Prepared``, ``Encoded``), and a request whose image is not encoded yet waits in its
own slot while every other slot keeps decoding. Encoding and tokenizing on separate
threads means a warm follow-up question (tokenize only, embeddings cached) is never
queued behind another user's 2-second encode.

``threaded=False`` runs the same work inline on the caller's thread (the engine's):
the old blocking behaviour, kept for the equivalence tests and for debugging.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vlmserve.engine.backend import ImageChunk, PromptChunk, VisionBackend
from vlmserve.errors import EngineError, VlmserveError
from vlmserve.types import Prompt

log = logging.getLogger(__name__)


class EmbeddingStore(Protocol):
    """The disk tier of the image-embedding cache, as the encoder thread uses it."""

    def get(self, key: str) -> np.ndarray | None: ...

    def put(self, key: str, embd: np.ndarray) -> bool: ...

    def __contains__(self, key: str) -> bool: ...


@dataclass(frozen=True)
class Prepared:
    """A prompt's chunks (or why it could not be tokenized)."""

    request_id: str
    chunks: list[PromptChunk] | None
    error: VlmserveError | None = None


@dataclass(frozen=True)
class Encoded:
    """An image's embeddings, its failure, or (both None) its cancellation."""

    request_id: str
    unit_index: int
    embd: np.ndarray | None
    from_disk: bool = False
    encode_ms: float = 0.0
    error: VlmserveError | None = None


@dataclass(frozen=True)
class _StoreTask:
    key: str
    data: np.ndarray


@dataclass(frozen=True)
class _EncodeTask:
    request_id: str
    unit_index: int
    chunk: ImageChunk


class VisionStage:
    """Prepare and encode work for the engine loop; results go to ``deliver``."""

    def __init__(self, backend: VisionBackend, deliver: Callable[[Prepared | Encoded], None],
                 disk: EmbeddingStore | None = None, threaded: bool = True) -> None:
        self._backend = backend
        self._deliver = deliver
        self._disk = disk
        self._threaded = threaded
        self._prepare_q: queue.Queue[tuple[str, Prompt] | None] = queue.Queue()
        self._encode_q: queue.Queue[_EncodeTask | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ---- the engine thread -------------------------------------------------------------
    def start(self) -> None:
        if not self._threaded:
            return
        self._threads = [
            threading.Thread(target=self._serve, args=(self._prepare_q, self._prepare),
                             name="vlmserve-prepare", daemon=True),
            threading.Thread(target=self._serve, args=(self._encode_q, self._encode),
                             name="vlmserve-encoder", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the workers; False if one is still busy inside llama.cpp after ``timeout``."""
        self._prepare_q.put(None)
        self._encode_q.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = any(t.is_alive() for t in self._threads)
        self._threads = [t for t in self._threads if t.is_alive()]
        return not alive

    def prepare(self, request_id: str, prompt: Prompt) -> None:
        """Tokenize ``prompt``; a ``Prepared`` message follows."""
        if self._threaded:
            self._prepare_q.put((request_id, prompt))
        else:
            self._prepare((request_id, prompt))

    def encode(self, request_id: str, unit_index: int, chunk: ImageChunk) -> None:
        """Embeddings for ``chunk`` (disk tier, else the encoder); an ``Encoded`` follows.

        The chunk is lent: the caller must not free it before the ``Encoded`` arrives.
        """
        task = _EncodeTask(request_id, unit_index, chunk)
        if self._threaded:
            self._encode_q.put(task)
        else:
            self._encode(task)

    def store(self, key: str, data: np.ndarray) -> None:
        """Write ``data`` to the disk tier under ``key``, on the encoder thread (after the
        encodes already asked for), so the engine thread never waits for the disk."""
        if self._disk is None:
            return
        if self._threaded:
            self._encode_q.put(_StoreTask(key, data))
        else:
            self._write(key, data)

    def cancel(self, request_id: str) -> None:
        """Skip the request's encodes not yet started (each still answers, cancelled)."""
        with self._lock:
            self._cancelled.add(request_id)

    def forget(self, request_id: str) -> None:
        """The request's last lent chunk is back: drop its cancellation mark."""
        with self._lock:
            self._cancelled.discard(request_id)

    # ---- the worker threads --------------------------------------------------------------
    @staticmethod
    def _serve(q: queue.Queue, work: Callable) -> None:
        while (item := q.get()) is not None:
            work(item)

    def _prepare(self, item: tuple[str, Prompt]) -> None:
        request_id, prompt = item
        try:
            chunks = self._backend.tokenize_prompt(prompt)
        except VlmserveError as exc:
            self._deliver(Prepared(request_id, None, exc))
            return
        except Exception:
            log.exception("tokenizing a prompt failed")
            self._deliver(Prepared(request_id, None,
                                   EngineError("the prompt could not be tokenized")))
            return
        self._deliver(Prepared(request_id, chunks))

    def _encode(self, task: _EncodeTask | _StoreTask) -> None:
        if isinstance(task, _StoreTask):
            self._write(task.key, task.data)
            return
        with self._lock:
            cancelled = task.request_id in self._cancelled
        if cancelled:
            self._deliver(Encoded(task.request_id, task.unit_index, None))
            return
        key = task.chunk.key
        embd = self._disk.get(key) if self._disk is not None else None
        if embd is not None and embd.shape[0] == task.chunk.n_tokens:
            self._deliver(Encoded(task.request_id, task.unit_index, embd, from_disk=True))
            return
        t0 = time.perf_counter()
        try:
            embd = self._backend.encode_images([task.chunk])[0]
        except VlmserveError as exc:
            self._deliver(Encoded(task.request_id, task.unit_index, None, error=exc))
            return
        except Exception:
            log.exception("the vision encoder failed")
            self._deliver(Encoded(task.request_id, task.unit_index, None,
                                  error=EngineError("the vision encoder failed")))
            return
        ms = (time.perf_counter() - t0) * 1000
        self._deliver(Encoded(task.request_id, task.unit_index, embd, encode_ms=ms))
        self._write(key, embd)  # after delivering: the request does not wait for the disk

    def _write(self, key: str, data: np.ndarray) -> None:
        if self._disk is None:
            return
        try:
            self._disk.put(key, data)
        except OSError as exc:
            log.warning("could not write the image-embedding disk cache: %s", exc)

"""Up to N requests in flight on one engine; every finished image becomes one record.

``parallel`` worker threads each take a ``LoadedImage`` from a small queue (fed by a
loader or the folder watcher, which decodes ahead), send one request with
``engine.run_to_end`` and hand the record to the ``ResultWriter``. With as
many workers as the engine has slots, the engine's continuous batching always has N
sequences to step together.

``stop()`` stops feeding, aborts the requests in flight and leaves what is queued:
those images get no line, so a later ``--resume`` (or watch restart) does them. No
method blocks for long, so the main thread stays free to notice a second Ctrl-C.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from vlmserve.batch.inputs import LoadedImage
from vlmserve.batch.records import make_record
from vlmserve.batch.results import ResultWriter
from vlmserve.batch.task import Task
from vlmserve.chat import ChatRenderer
from vlmserve.engine.client import EngineClient
from vlmserve.engine.run_to_end import run_to_end
from vlmserve.errors import VlmserveError
from vlmserve.types import FinishReason, Request

log = logging.getLogger(__name__)


class BatchRunner:
    def __init__(self, engine: EngineClient, task: Task, writer: ResultWriter,
                 parallel: int) -> None:
        self._engine = engine
        self._task = task
        self._writer = writer
        self._renderer = ChatRenderer.for_model(engine.info.chat_template)
        self._queue: queue.Queue[LoadedImage] = queue.Queue(maxsize=parallel)
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._closed = threading.Event()
        self._workers = [threading.Thread(target=self._work, name=f"vlmserve-batch-{i}",
                                          daemon=True) for i in range(parallel)]
        for w in self._workers:
            w.start()

    def put(self, item: LoadedImage) -> bool:
        """Queue one image (blocks while N are waiting); False once stopping."""
        while not self.stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close_input(self) -> None:
        """No more images: the workers finish what is queued, then exit."""
        self._closed.set()

    def stop(self) -> None:
        """Abort what is in flight and leave what is queued (never blocks)."""
        self.stopping.set()
        with self._lock:
            for request_id in self._inflight:
                self._engine.abort(request_id)

    def wait(self, timeout: float) -> bool:
        """True once every worker has exited (after ``close_input`` or ``stop``)."""
        for w in self._workers:
            w.join(timeout)
            if w.is_alive():
                return False
        return True

    # ---- workers -------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            try:
                record = self._describe(item)
            except VlmserveError as exc:
                record = make_record(item, self._task, error=exc.message)
            except Exception as exc:  # a bug must cost one line, not the worker
                log.exception("batch worker failed on %s", item.path)
                record = make_record(item, self._task, error=f"internal error: {exc!r}")
            if record is None:
                continue  # stopped: no line, so a resume does it again
            try:
                self._writer.put(record)
            except VlmserveError:
                self.stopping.set()  # the file cannot be written: nothing more is useful

    def _describe(self, item: LoadedImage) -> dict[str, Any] | None:
        if item.image is None:
            return make_record(item, self._task, error=item.error or "unreadable image")
        prompt = self._renderer.render(self._task.messages(item.image))
        request = Request(f"batch-{uuid.uuid4().hex[:12]}", prompt, self._task.sampling)
        with self._lock:
            self._inflight.add(request.request_id)
        try:
            if self.stopping.is_set():
                return None
            end = run_to_end(self._engine, request, should_stop=self.stopping.is_set)
            if end is None or end.finish_reason is FinishReason.ABORT:
                return None  # stopped: no line, so a resume does it again
            return make_record(item, self._task, end.text, end.finish_reason.value, end.stats,
                               end.error.message if end.error is not None else None)
        finally:
            with self._lock:
                self._inflight.discard(request.request_id)

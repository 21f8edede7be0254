"""``watch --stream``: describe a frame of each camera every few seconds, one line each.

One reader thread per source (``video.streams.StreamReader``: a frame every ``every``
seconds, reopened when a live stream drops) drops near-duplicate frames
(``video.near_duplicate``) and hands the rest to a shared queue; ``parallel`` worker
threads send one request each to the one engine, so frames of several cameras are
decoded together by its continuous batching. When the engine falls behind, a reader
drops the frame it cannot queue (counted, not described late): a monitor wants the
present, not a backlog.

Each described frame is one JSON line (``StreamLineWriter``: whole lines, fsynced). With
a JSON schema and ``alert_field``, a frame whose answer has that boolean field true is
an alert: its line says so and ``AlertSender`` logs it and POSTs it to the webhook.
Stopping (Ctrl-C) stops the readers, aborts the requests in flight (those frames get no
line) and delivers the alerts already raised.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from vlmserve.batch.records import stats_fields
from vlmserve.batch.signals import StopFlag
from vlmserve.batch.task import Task
from vlmserve.batch.webhook import AlertSender
from vlmserve.chat import ChatRenderer
from vlmserve.config import ImageOptions
from vlmserve.engine.client import EngineClient
from vlmserve.engine.run_to_end import run_to_end
from vlmserve.errors import VlmserveError
from vlmserve.images import prepare_image
from vlmserve.types import FinishReason, Request
from vlmserve.video.near_duplicate import NearDuplicateFilter
from vlmserve.video.streams import StreamFrame, StreamReader

log = logging.getLogger(__name__)


class StreamLineWriter:
    """Appends one JSON line per record: one ``write`` of the whole line, then fsync."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise VlmserveError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.path = path
        self._lock = threading.Lock()
        self.written = 0
        self.failed: str | None = None

    def put(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self.failed:
                raise VlmserveError(self.failed)
            try:
                os.write(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                self.failed = f"cannot write {self.path}: {exc.strerror or exc}"
                raise VlmserveError(self.failed) from None
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass
class StreamCounts:
    """What happened to the frames of one source."""

    sampled: int = 0
    duplicates: int = 0
    busy: int = 0  # dropped because every worker was busy
    described: int = 0
    alerts: int = 0
    errors: int = 0


@dataclass
class StreamWatchOutcome:
    written: int
    counts: dict[str, StreamCounts]
    alerts_sent: int
    alerts_failed: int
    write_error: str | None
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StreamJob:
    task: Task
    options: ImageOptions
    every: float
    alert_field: str | None = None
    dup_distance: int = 4
    parallel: int = 1
    realtime: bool = True


class StreamWatch:
    """The threads of one ``watch --stream`` run (see module doc)."""

    def __init__(self, engine: EngineClient, job: StreamJob, sources: list[str],
                 writer: StreamLineWriter, alerts: AlertSender,
                 say: Callable[[str], None]) -> None:
        self.engine, self.job, self.writer, self.alerts = engine, job, writer, alerts
        self._say = say
        self._renderer = ChatRenderer.for_model(engine.info.chat_template)
        self.counts = {s: StreamCounts() for s in sources}
        self.readers = [StreamReader(s, job.every, on_event=say, realtime=job.realtime)
                        for s in sources]
        self._queue: queue.Queue[StreamFrame] = queue.Queue(maxsize=max(2, job.parallel))
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self._reader_threads = [threading.Thread(target=self._read, args=(r,), daemon=True,
                                                 name=f"vlmserve-stream-{i}")
                                for i, r in enumerate(self.readers)]
        self._workers = [threading.Thread(target=self._work, daemon=True,
                                          name=f"vlmserve-frames-{i}")
                         for i in range(job.parallel)]

    def start(self) -> None:
        for t in self._reader_threads + self._workers:
            t.start()

    def stop(self) -> None:
        """Stop reading, abort what is in flight (never blocks)."""
        self.stopping.set()
        for r in self.readers:
            r.stop()
        with self._lock:
            for request_id in self._inflight:
                self.engine.abort(request_id)

    def done(self, timeout: float) -> bool:
        """True once every reader ended (files) and every worker exited."""
        for t in self._reader_threads + self._workers:
            t.join(timeout)
            if t.is_alive():
                return False
        return True

    # ---- readers -------------------------------------------------------------------
    def _read(self, reader: StreamReader) -> None:
        counts = self.counts[reader.source]
        dups = NearDuplicateFilter(self.job.dup_distance)
        try:
            for frame in reader.frames():
                counts.sampled += 1
                h = dups.check(frame.image)
                if h is None:
                    counts.duplicates += 1
                    continue
                if self._offer(frame, reader.live):
                    dups.accept(h)
                elif not self.stopping.is_set():
                    counts.busy += 1
        except VlmserveError as exc:
            counts.errors += 1
            self.errors.append(exc.message)
            self._say(f"error: {exc.message}")

    def _offer(self, frame: StreamFrame, live: bool) -> bool:
        """Queue ``frame``: a live frame waits at most 0.5 s for a free worker (then it is
        dropped: the next one is fresher); a file's frame waits until taken or stopped."""
        waited = 0.0
        while not self.stopping.is_set():
            try:
                self._queue.put(frame, timeout=0.1)
                return True
            except queue.Full:
                waited += 0.1
                if live and waited >= 0.5:
                    return False
        return False

    def _readers_done(self) -> bool:
        return not any(t.is_alive() for t in self._reader_threads)

    # ---- workers -------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                frame = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._readers_done() and self._queue.empty():
                    return
                continue
            try:
                record = self._describe(frame)
            except VlmserveError as exc:
                record = self._record(frame, error=exc.message)
            except Exception as exc:  # a bug costs one line, not the worker
                log.exception("stream worker failed on %s", frame.source)
                record = self._record(frame, error=f"internal error: {exc!r}")
            if record is None:
                continue
            counts = self.counts[frame.source]
            counts.described += record["error"] is None
            counts.errors += record["error"] is not None
            try:
                self.writer.put(record)
            except VlmserveError:
                self.stop()
                return
            if record.get("alert"):
                counts.alerts += 1
                self.alerts.alert({"id": record["alert_id"], "field": self.job.alert_field,
                                   "stream": frame.source, "frame": frame.index,
                                   "frame_time": frame.time_s,
                                   "captured_at": record["captured_at"],
                                   "answer": record["answer"]})

    def _describe(self, frame: StreamFrame) -> dict[str, Any] | None:
        buf = io.BytesIO()
        frame.image.save(buf, "PNG", compress_level=1)
        image = prepare_image(buf.getvalue(), self.job.options)
        prompt = self._renderer.render(self.job.task.messages(image))
        request = Request(f"stream-{uuid.uuid4().hex[:12]}", prompt, self.job.task.sampling)
        with self._lock:
            self._inflight.add(request.request_id)
        try:
            if self.stopping.is_set():
                return None
            end = run_to_end(self.engine, request, should_stop=self.stopping.is_set)
            if end is None or end.finish_reason is FinishReason.ABORT:
                return None  # stopped: no line
            if end.error is not None:
                return self._record(frame, image.content_hash, error=end.error.message)
            return self._record(frame, image.content_hash, end.text, end.finish_reason.value,
                                end.stats, size=(image.width, image.height))
        finally:
            with self._lock:
                self._inflight.discard(request.request_id)

    def _record(self, frame: StreamFrame, content_hash: str | None = None,
                text: str | None = None, finish_reason: str | None = None, stats=None,
                error: str | None = None, size: tuple[int, int] | None = None,
                ) -> dict[str, Any]:
        task = self.job.task
        answer: Any = text
        answer_text = None
        alert = None
        if error is None and task.structured is not None:
            answer_text = text
            parsed = task.structured.parse(text or "", finish_reason or "")
            answer, error = parsed.value, parsed.error
        if error is None and self.job.alert_field is not None:
            alert = isinstance(answer, dict) and answer.get(self.job.alert_field) is True
        return {
            "stream": frame.source,
            "frame": frame.index,
            "frame_time": frame.time_s,
            "connection": frame.connection,
            "captured_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "content_hash": content_hash,
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "template": task.template,
            "prompt": task.prompt,
            "answer": answer,
            "answer_text": answer_text,
            "finish_reason": finish_reason,
            **stats_fields(stats),
            "alert": alert,
            "alert_id": uuid.uuid4().hex[:16] if alert else None,
            "error": error,
        }


def watch_streams(engine: EngineClient, job: StreamJob, sources: list[str], output: str,
                  flag: StopFlag, webhook: str | None = None, webhook_tries: int = 5,
                  webhook_backoff: float = 0.5,
                  say: Callable[[str], None] | None = None) -> StreamWatchOutcome:
    """Watch ``sources`` until ``flag`` is set (or every source was a file, played out)."""
    say = say or (lambda line: log.warning("%s", line))
    writer = StreamLineWriter(output)
    alerts = AlertSender(webhook, webhook_tries, webhook_backoff, say=say)
    watch = StreamWatch(engine, job, sources, writer, alerts, say)
    watch.start()
    try:
        while not watch.done(0.1):
            if flag.set and not watch.stopping.is_set():
                watch.stop()
    finally:
        watch.stop()
        watch.done(30.0)
        alerts.close()
        writer.close()
    return StreamWatchOutcome(writer.written, watch.counts, alerts.sent, alerts.failed,
                              writer.failed,
                              sum(max(r.connections - 1, 0) for r in watch.readers),
                              watch.errors)

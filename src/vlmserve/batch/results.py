"""The results file: one record per image, written safely, read back to resume.

Writing: one ``ResultWriter`` thread owns the file. Each record becomes one complete
line (JSONL) or row (CSV) written with ``os.write`` on an ``O_APPEND`` descriptor;
after each group of lines taken from the queue it calls ``os.fsync``. So a line is
durable before it counts as done (the progress bar moves after the fsync), while a
burst of finished images shares one fsync (group commit) instead of paying one each.
A write that fails (disk full, a file-size limit) is cut back to the end of the
last whole line (``ftruncate``) before the writer stops, so the file never holds half a
line. A process killed mid-write can leave at most a partial last line, which
``open_results`` cuts off before appending again.

Reading: ``open_results`` refuses a non-empty file unless resuming, repairs a partial
tail, and returns the records already there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmserve.errors import VlmserveError

# Every record has these keys, in this order (the CSV header).
FIELDS = (
    "path", "file_sha256", "content_hash", "width", "height", "template", "prompt",
    "answer", "answer_text", "finish_reason", "prompt_tokens", "image_tokens",
    "cached_tokens", "completion_tokens", "image_encode_ms", "ttft_ms", "prefill_ms",
    "decode_tokens_per_s", "total_ms", "finished_at", "error",
)
FORMATS = ("jsonl", "csv")


def format_for(path: str | Path, fmt: str | None) -> str:
    """The explicit format, else ``csv`` for a ``.csv`` file, else ``jsonl``."""
    if fmt:
        return fmt
    return "csv" if str(path).lower().endswith(".csv") else "jsonl"


def encode(record: dict[str, Any], fmt: str) -> bytes:
    """One complete line (or CSV row) for ``record``."""
    if fmt == "jsonl":
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    buf = io.StringIO()
    row = []
    for name in FIELDS:
        value = record.get(name)
        if isinstance(value, dict | list | bool):
            value = json.dumps(value, ensure_ascii=False)
        row.append("" if value is None else value)
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue().encode("utf-8")


def csv_header() -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(FIELDS)
    return buf.getvalue().encode("utf-8")


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Existing:
    records: list[dict[str, Any]]  # the complete records already in the file
    repaired_bytes: int  # bytes of a partial tail that were cut off
    bad_lines: int  # complete lines that did not parse (kept, ignored)


def open_results(path: str | Path, fmt: str, resume: bool) -> Existing:
    """Check ``path`` before a run; with ``resume``, repair and read it.

    A missing or empty file is fine. A non-empty one without ``resume`` is refused
    (rather than mixing two runs), as is a CSV file with other columns.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Existing([], 0, 0)
    except OSError as exc:
        raise VlmserveError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        return Existing([], 0, 0)
    if not resume:
        raise VlmserveError(f"{path} already holds results: add --resume to continue that run "
                            "(images already there are skipped), or choose a new --output file")
    keep = data.rfind(b"\n") + 1  # a line without its newline was cut by a crash
    if fmt == "csv":
        records, keep, bad = _read_csv(path, data[:keep])
    else:
        records, bad = _read_jsonl(data[:keep])
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return Existing(records, len(data) - keep, bad)


def _read_jsonl(data: bytes) -> tuple[list[dict[str, Any]], int]:
    records, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def _read_csv(path: Path, data: bytes) -> tuple[list[dict[str, Any]], int, int]:
    """Records, the byte length of the complete rows, and 0 bad lines.

    A row cut inside a quoted field (answers may hold newlines) ends in an unterminated
    quote (``strict`` raises) or has too few fields; everything from it on is dropped.
    """
    text = data.decode("utf-8", errors="surrogateescape")
    lines = list(io.StringIO(text, newline=""))
    reader = csv.reader(iter(lines), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        header = []
    if tuple(header) != FIELDS:
        raise VlmserveError(f"{path} is not a vlmserve results CSV with the current columns; "
                            "choose a new --output file")
    records: list[dict[str, Any]] = []
    good_lines = reader.line_num
    try:
        for row in reader:
            if len(row) != len(FIELDS):
                break
            records.append({k: (v if v != "" else None) for k, v in zip(FIELDS, row, strict=True)})
            good_lines = reader.line_num
    except csv.Error:
        pass
    keep = len("".join(lines[:good_lines]).encode("utf-8", errors="surrogateescape"))
    return records, keep, 0


# ------------------------------------------------------------------------------ writing


class ResultWriter:
    """The only writer of the results file (a thread fed by a queue; see module doc)."""

    def __init__(self, path: str | Path, fmt: str,
                 on_written: Callable[[dict[str, Any]], None] | None = None) -> None:
        if fmt not in FORMATS:
            raise VlmserveError(f"unknown output format {fmt!r}; use one of {FORMATS}")
        self.path, self.fmt = Path(path), fmt
        self._on_written = on_written
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise VlmserveError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        # Where the last whole line ends: a failed write is cut back to here.
        self._whole = os.fstat(self._fd).st_size
        if fmt == "csv" and self._whole == 0:
            try:
                self._write_line(csv_header())
            except OSError as exc:
                os.close(self._fd)
                raise VlmserveError(f"cannot write {self.path}: {exc.strerror or exc}"
                                    ) from None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.written = 0
        self.failed: str | None = None  # why writing stopped (disk full...), if it did
        self._thread = threading.Thread(target=self._run, name="vlmserve-results", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        if self.failed:
            raise VlmserveError(self.failed)
        self._queue.put({name: record.get(name) for name in FIELDS})

    def close(self) -> None:
        """Write what is queued, fsync, close (idempotent)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            os.close(self._fd)

    def _write_line(self, data: bytes) -> None:
        """Append one whole line, or nothing: on a failure the file is cut back to the
        end of the last whole line and the error is raised."""
        view = memoryview(data)
        try:
            while view:  # os.write may take less than all of it (a disk that fills up)
                view = view[os.write(self._fd, view):]
        except OSError:
            os.ftruncate(self._fd, self._whole)
            raise
        self._whole += len(data)

    def _run(self) -> None:
        stop = False
        while not stop:
            group = [self._queue.get()]
            while len(group) < 256:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in group:
                stop = True
            records = [r for r in group if r is not None]
            if self.failed or not records:
                continue
            done: list[dict[str, Any]] = []
            try:
                for record in records:
                    self._write_line(encode(record, self.fmt))
                    done.append(record)
            except OSError as exc:
                self.failed = f"cannot write {self.path}: {exc.strerror or exc}"
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.failed = self.failed or f"cannot write {self.path}: {exc.strerror or exc}"
                continue
            self.written += len(done)  # whole lines, on disk
            if self._on_written is not None:
                for record in done:
                    self._on_written(record)

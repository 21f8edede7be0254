"""``describe`` over many files: a loader thread reads, hashes and decodes ahead, skips
what the results file already covers, and feeds the runner; the calling (main) thread
only watches for Ctrl-C/SIGTERM, so stopping is clean whatever the workers are doing."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmserve.batch.done import DoneIndex
from vlmserve.batch.inputs import LoadedImage, file_sha256, load_image
from vlmserve.batch.progress import BatchProgress
from vlmserve.batch.results import Existing, ResultWriter
from vlmserve.batch.runner import BatchRunner
from vlmserve.batch.signals import StopFlag
from vlmserve.batch.task import Task
from vlmserve.config import ImageOptions
from vlmserve.engine.client import EngineClient
from vlmserve.errors import ImageError
from vlmserve.images import read_image_bytes


@dataclass(frozen=True)
class Outcome:
    total: int  # input files
    written: int  # lines written by this run
    errors: int  # of those, lines with an error
    skipped: int  # already in the results file (resume)
    seconds: float
    signum: int | None  # the signal that stopped the run, if one did
    write_error: str | None  # why the results file could not be written, if so

    @property
    def left(self) -> int:
        return self.total - self.written - self.skipped

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def _feed(runner: BatchRunner, task: Task, paths: Sequence[str], done: DoneIndex,
          options: ImageOptions, progress: BatchProgress) -> None:
    current = frozenset(paths)
    try:
        for path in paths:
            if runner.stopping.is_set():
                return
            try:
                data = read_image_bytes(path, options.max_bytes)
            except ImageError as exc:
                item = LoadedImage(path, error=f"{path}: {exc.message}")
            else:
                sha = file_sha256(data)
                if done.covers(task.key, path, sha, None, current):
                    progress.skip()  # same bytes already answered: no need to decode
                    continue
                item = load_image(path, options, data)
                if item.image is not None and done.covers(task.key, path, sha,
                                                          item.content_hash, current):
                    progress.skip()
                    continue
            if not runner.put(item):
                return
    finally:
        runner.close_input()


def describe_files(engine: EngineClient, task: Task, paths: Sequence[str],
                   output: str | Path, fmt: str, existing: Existing, parallel: int,
                   options: ImageOptions, flag: StopFlag,
                   progress_enabled: bool | None = None) -> Outcome:
    """Describe ``paths`` with ``parallel`` requests in flight, appending to ``output``."""
    done = DoneIndex(existing.records)
    progress = BatchProgress(len(paths), progress_enabled)
    writer = ResultWriter(output, fmt,
                          on_written=lambda r: progress.finished(r["error"] is not None))
    t0 = time.perf_counter()
    runner = BatchRunner(engine, task, writer, parallel)
    loader = threading.Thread(target=_feed, name="vlmserve-loader", daemon=True,
                              args=(runner, task, paths, done, options, progress))
    loader.start()
    try:
        while not runner.wait(0.1):
            if flag.set and not runner.stopping.is_set():
                runner.stop()
    finally:
        runner.stop()  # a no-op after a normal end; aborts if we leave by an exception
        runner.wait(30.0)
        writer.close()
        progress.close()
        loader.join(5.0)
    return Outcome(len(paths), writer.written, progress.errors, progress.skipped,
                   time.perf_counter() - t0, flag.signum, writer.failed)

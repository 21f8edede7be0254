"""``watch``: describe each image that appears in a folder, once it is completely written.

Polling, no OS notification API: every ``interval`` seconds the folder is walked
(hidden and temporary names such as ``*.part``, ``*.tmp``, ``~*`` skipped) and each
file's (size, mtime) is compared with the previous poll. A file is *ready* when it is
non-empty and unchanged across two polls; it is then read, hashed and decoded. A
ready file that does not decode may still be in the middle of a slow copy, so it is
retried at every poll while unchanged, and gets an error line only after
``broken_after`` seconds; if it changes, it starts over.

Each picture is described once per task: the content keys of the results file (and
of everything queued since) are remembered, so a restart with the same output file
skips what is done, and a copy of a done picture under a new name is skipped too.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vlmserve.batch.done import DoneIndex
from vlmserve.batch.inputs import load_image, walk_images
from vlmserve.batch.progress import BatchProgress
from vlmserve.batch.results import Existing, ResultWriter
from vlmserve.batch.runner import BatchRunner
from vlmserve.batch.signals import StopFlag
from vlmserve.batch.task import Task
from vlmserve.config import ImageOptions
from vlmserve.engine.client import EngineClient

Signature = tuple[int, int]  # size, mtime_ns


class FolderPoller:
    """Which files under ``root`` are ready (see module doc); knows nothing of images."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        self._last: dict[str, Signature] = {}
        self._handled: dict[str, Signature] = {}

    def _snapshot(self) -> dict[str, Signature]:
        snap: dict[str, Signature] = {}
        for path in walk_images(self.root):
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone (renamed, deleted) since the walk
            snap[path] = (st.st_size, st.st_mtime_ns)
        return snap

    def ready(self) -> list[tuple[str, Signature]]:
        """Poll once: the files unchanged since the last poll and not yet handled as such."""
        snap = self._snapshot()
        ready = [(path, sig) for path, sig in sorted(snap.items())
                 if sig[0] > 0 and self._last.get(path) == sig and self._handled.get(path) != sig]
        self._last = snap
        self._handled = {p: s for p, s in self._handled.items() if p in snap}
        return ready

    def handled(self, path: str, sig: Signature) -> None:
        self._handled[path] = sig

    def ignore_existing(self) -> None:
        """``--new-only``: treat every file present now as handled."""
        self._last = self._snapshot()
        self._handled = dict(self._last)

    @staticmethod
    def signature(path: str) -> Signature | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)


@dataclass
class WatchOutcome:
    written: int
    errors: int
    skipped: int
    write_error: str | None


def _feed(runner: BatchRunner, poller: FolderPoller, task: Task, done: DoneIndex,
          options: ImageOptions, interval: float, broken_after: float,
          progress: BatchProgress) -> None:
    failing: dict[tuple[str, Signature], float] = {}  # first failed decode of this version
    try:
        while not runner.stopping.is_set():
            for path, sig in poller.ready():
                if runner.stopping.is_set():
                    return
                item = load_image(path, options)
                if poller.signature(path) != sig:
                    continue  # changed while we read it: wait for it to settle again
                if item.image is None:
                    first = failing.setdefault((path, sig), time.monotonic())
                    if time.monotonic() - first < broken_after:
                        continue  # maybe a copy that paused: retry at the next poll
                failing.pop((path, sig), None)
                poller.handled(path, sig)
                if done.paths(task.key, item.file_sha256, item.content_hash):
                    progress.skip()
                    continue
                done.add({"template": task.template, "prompt": task.prompt, "path": path,
                          "file_sha256": item.file_sha256, "content_hash": item.content_hash})
                if not runner.put(item):
                    return
            deadline = time.monotonic() + interval
            while not runner.stopping.is_set() and time.monotonic() < deadline:
                time.sleep(min(0.05, interval))
    finally:
        runner.close_input()


def watch_folder(engine: EngineClient, task: Task, root: str | Path, output: str | Path,
                 fmt: str, existing: Existing, parallel: int, options: ImageOptions,
                 flag: StopFlag, interval: float = 1.0, broken_after: float = 60.0,
                 new_only: bool = False, progress_enabled: bool | None = None) -> WatchOutcome:
    """Describe the images appearing under ``root`` until ``flag`` is set."""
    poller = FolderPoller(root)
    if new_only:
        poller.ignore_existing()
    done = DoneIndex(existing.records)
    progress = BatchProgress(None, progress_enabled, desc="watch")
    writer = ResultWriter(output, fmt,
                          on_written=lambda r: progress.finished(r["error"] is not None))
    runner = BatchRunner(engine, task, writer, parallel)
    feeder = threading.Thread(target=_feed, name="vlmserve-watch", daemon=True,
                              args=(runner, poller, task, done, options, interval,
                                    broken_after, progress))
    feeder.start()
    try:
        while not runner.wait(0.1):
            if flag.set and not runner.stopping.is_set():
                runner.stop()
    finally:
        runner.stop()
        runner.wait(30.0)
        writer.close()
        progress.close()
        feeder.join(5.0)
    return WatchOutcome(writer.written, progress.errors, progress.skipped, writer.failed)

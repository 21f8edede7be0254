"""``vlmserve describe --ray``: the folder job on Ray Data.

The driver lists the inputs (a local folder, files and globs as the local job expands
them; or a URI Ray Data reads, e.g. ``s3://bucket/photos/``), reads what the results file
already has, and streams the rest through ``map_batches`` over an actor pool of engines
(``EngineDescriber``, ``concurrency`` actors). Each actor skips the images the results
file already covers (by file sha256, then by pixel content hash: the local job's resume
rule, ``batch.done.DoneIndex``), answers the others with its own engine, and returns one
results line per image; the driver writes them with the local job's ``ResultWriter``
(whole, fsynced lines), so an interrupted run loses only answers not yet written, and
``--resume`` does exactly those.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from vlmserve.batch.done import DoneIndex
from vlmserve.batch.inputs import LoadedImage, file_sha256, load_image
from vlmserve.batch.progress import BatchProgress
from vlmserve.batch.records import make_record
from vlmserve.batch.results import Existing, ResultWriter
from vlmserve.batch.signals import StopFlag
from vlmserve.batch.task import Task
from vlmserve.chat import ChatRenderer
from vlmserve.config import EngineConfig, ImageOptions
from vlmserve.engine.factory import create_engine
from vlmserve.engine.run_to_end import run_to_end
from vlmserve.errors import ImageError, VlmserveError
from vlmserve.images import read_image_bytes
from vlmserve.types import FinishReason, Request


@dataclass(frozen=True)
class DataJob:
    """What every actor needs: the engine, the task, what is done already."""

    engine: EngineConfig
    task: Task
    options: ImageOptions
    done: DoneIndex
    current: frozenset[str]  # this run's input paths (the resume rule needs them)


class EngineDescriber:
    """One engine per actor; a batch of rows -> one JSON results line (or a skip) each."""

    def __init__(self, job: DataJob) -> None:
        self._job = job
        self._engine = create_engine(job.engine)
        self._renderer = ChatRenderer.for_model(self._engine.info.chat_template)
        self._pool = ThreadPoolExecutor(max(1, job.engine.n_parallel))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        paths = [str(p) for p in batch["path"]]
        data = list(batch["bytes"]) if "bytes" in batch else [None] * len(paths)
        lines = list(self._pool.map(self._line, paths, data))
        return {"path": paths, "line": [line or "" for line in lines],
                "skipped": [line is None for line in lines]}

    def _line(self, path: str, data: bytes | None) -> str | None:
        job = self._job
        try:
            if data is None:
                data = read_image_bytes(path, job.options.max_bytes)
        except ImageError as exc:
            return _dump(make_record(LoadedImage(path, error=f"{path}: {exc.message}"),
                                     job.task, error=f"{path}: {exc.message}"))
        data = bytes(data)
        sha = file_sha256(data)
        if job.done.covers(job.task.key, path, sha, None, job.current):
            return None
        item = load_image(path, job.options, data)
        if item.image is not None and job.done.covers(job.task.key, path, sha,
                                                      item.content_hash, job.current):
            return None
        return _dump(self._record(item))

    def _record(self, item: LoadedImage) -> dict[str, Any]:
        task = self._job.task
        if item.image is None:
            return make_record(item, task, error=item.error or "unreadable image")
        try:
            prompt = self._renderer.render(task.messages(item.image))
            request = Request(f"ray-{uuid.uuid4().hex[:12]}", prompt, task.sampling)
            end = run_to_end(self._engine, request)
        except VlmserveError as exc:
            return make_record(item, task, error=exc.message)
        if end is None or end.finish_reason is FinishReason.ABORT:
            return make_record(item, task, error="the engine stopped the request")
        return make_record(item, task, end.text, end.finish_reason.value, end.stats,
                           end.error.message if end.error is not None else None)

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


@dataclass(frozen=True)
class DataOutcome:
    total: int
    written: int
    errors: int
    skipped: int
    signum: int | None
    write_error: str | None


def is_uri(arg: str) -> bool:
    return "://" in arg


def describe_on_ray(job: DataJob, inputs: list[str], output: str | Path, fmt: str,
                    existing: Existing, actors: int, actor_cpus: float, actor_gpus: float,
                    flag: StopFlag, progress_enabled: bool | None = None) -> DataOutcome:
    """Run the job on the connected Ray; ``inputs`` are paths, or URIs Ray Data reads."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts lines written, theirs would mix in
    if inputs and all(is_uri(i) for i in inputs):
        dataset = ray.data.read_binary_files(inputs, include_paths=True)
        total = None
    else:
        dataset = ray.data.from_items([{"path": p} for p in inputs])
        total = len(inputs)
    answered = dataset.map_batches(
        EngineDescriber, fn_constructor_kwargs={"job": job},
        batch_size=max(1, job.engine.n_parallel),
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus, num_gpus=actor_gpus or None, batch_format="default")
    progress = BatchProgress(total, progress_enabled)
    writer = ResultWriter(output, fmt,
                          on_written=lambda r: progress.finished(r["error"] is not None))
    seen = 0
    try:
        for row in answered.iter_rows():
            if flag.set or writer.failed:
                break
            seen += 1
            if row["skipped"]:
                progress.skip()
            else:
                writer.put(json.loads(row["line"]))
    finally:
        writer.close()
        progress.close()
    return DataOutcome(total if total is not None else seen, writer.written, progress.errors,
                       progress.skipped, flag.signum, writer.failed)

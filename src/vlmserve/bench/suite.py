"""Orchestration: options in, one JSON-ready document out (in process, HTTP, quant table)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlmserve.bench import SCHEMA_VERSION
from vlmserve.bench.gguf_facts import ModelFacts, read_model_facts
from vlmserve.bench.machine import (
    current_rss_bytes,
    load_average,
    machine_info,
    peak_rss_bytes,
    versions,
)
from vlmserve.bench.runner import build_questions, measure, planned_requests
from vlmserve.bench.summary import median, ratio
from vlmserve.bench.workload import BenchError, Workload

GPU_BACKENDS = ("CUDA", "Metal", "Vulkan", "HIP", "ROCm", "SYCL", "OpenCL", "CANN", "MUSA")
DEMO_STAMP = "bench-demo.json"


@dataclass(frozen=True)
class BenchOptions:
    workload: Workload
    command: str
    model: Path | None = None
    mmproj: Path | None = None
    demo_size: str | None = None
    demo_dir: Path | None = None
    threads: int = 0
    ctx_size: int = 0  # 0: just enough for the workload
    n_gpu_layers: int = -1
    baseline: str | None = None
    baseline_flash_attn: bool = False
    url: str | None = None
    api_key: str | None = None
    quant_table: bool = False
    roofline: bool = True
    concurrency: bool = True


class Progress:
    """A tqdm bar on stderr (or nothing); ``step(label)`` advances it by one."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        self.enabled = enabled

    def start(self, total: int, desc: str) -> None:
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr,
                             dynamic_ncols=True, leave=False)

    def step(self, label: str = "") -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text)
        elif self.enabled:
            print(f"vlmserve bench: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------------- helpers


def auto_ctx(w: Workload, image_tokens: int) -> int:
    """KV cells per slot for the workload: image + question + template + output, rounded up."""
    need = image_tokens + 2 + w.prompt_tokens + 64 + w.max_tokens
    return max(256, -(-need // 256) * 256)


def backend_name(gpu_offload: bool, n_gpu_layers: int, system_info: str) -> str:
    if gpu_offload and n_gpu_layers != 0:
        for name in GPU_BACKENDS:
            if name.lower() in system_info.lower():
                return name
        return "GPU"
    return "CPU"


def cpu_features(system_info: str) -> list[str]:
    feats = []
    for part in system_info.replace("|", " | ").split("|"):
        key, _, value = part.partition("=")
        if value.strip() == "1":
            feats.append(key.strip().split(":")[-1].strip())
    return feats


@contextlib.contextmanager
def demo_model(size: str, folder: Path | None) -> Iterator[tuple[Path, Path]]:
    """Write (or reuse, in ``folder``) a demo model, in a child process so that the
    writer's numpy buffers never count towards this process's peak RSS."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vlmbench-")))
        folder.mkdir(parents=True, exist_ok=True)
        model, mmproj, stamp = folder / "model.gguf", folder / "mmproj.gguf", folder / DEMO_STAMP
        wanted = {"size": size, "seed": 0}
        fresh = (model.is_file() and mmproj.is_file() and stamp.is_file()
                 and json.loads(stamp.read_text() or "{}") == wanted)
        if not fresh:
            stamp.unlink(missing_ok=True)
            proc = subprocess.run([sys.executable, "-m", "vlmserve.cli.main", "demo-model",
                                   str(folder), "--size", size],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
                raise BenchError(f"could not write the {size} demo model: {tail}")
            stamp.write_text(json.dumps(wanted))
        yield model, mmproj


def _model_json(facts: ModelFacts | None, mmproj: Path | None, demo_size: str | None,
                info: Any = None) -> dict[str, Any]:
    return {
        "path": facts.path if facts else None,
        "mmproj_path": str(mmproj) if mmproj else None,
        "demo_size": demo_size,
        "random_weights": True if demo_size else None,
        "name": facts.name if facts else None,
        "quant_type": facts.quant_type if facts else None,
        "file_size_bytes": facts.file_size_bytes if facts else None,
        "mmproj_file_size_bytes": mmproj.stat().st_size if mmproj and mmproj.is_file() else None,
        "n_params": info.n_params if info else None,
        "llama_model_size_bytes": info.model_size_bytes if info else None,
        "weight_bytes_per_token": facts.weight_bytes_per_token if facts else None,
        "architecture": facts.architecture if facts else None,
        "n_layer": facts.n_layer if facts else None,
        "n_embd": facts.n_embd if facts else None,
    }


def _base_doc(opts: BenchOptions, mode: str) -> dict[str, Any]:
    w = opts.workload
    return {
        "schema": SCHEMA_VERSION,
        "command": opts.command,
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "duration_s": None,
        "mode": mode,
        "machine": machine_info(),
        "load_average": {"start": load_average(), "end": None},
        "versions": versions(),
        "workload": {"image": [w.width, w.height], "prompt_tokens": w.prompt_tokens,
                     "max_tokens": w.max_tokens, "runs": w.runs, "warmup": w.warmup,
                     "concurrency": list(w.concurrency), "sampling": "greedy (temperature 0)",
                     "questions": None, "question_tokens": None},
        "model": None,
        "engine": None,
        "results": None,
        "roofline": None,
        "baseline": None,
        "comparison": None,
        "quant_table": None,
    }


def _finish(doc: dict[str, Any], t0: float) -> dict[str, Any]:
    doc["load_average"]["end"] = load_average()
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    return doc


# ---------------------------------------------------------------------------- in process


def run(opts: BenchOptions, progress: Progress) -> dict[str, Any]:
    if opts.url:
        return run_http(opts, progress)
    if opts.demo_size:
        with demo_model(opts.demo_size, opts.demo_dir) as (model, mmproj):
            return _run_local(replace(opts, model=model, mmproj=mmproj), progress)
    return _run_local(opts, progress)


def _run_local(opts: BenchOptions, progress: Progress) -> dict[str, Any]:
    if opts.model is None:
        raise BenchError("no model: pass --model FILE.gguf --mmproj MMPROJ.gguf or --demo SIZE")
    for label, path in (("model", opts.model), ("mmproj", opts.mmproj)):
        if path is None:
            raise BenchError("the benchmark needs a vision projector: pass --mmproj "
                             "MMPROJ.gguf (none was found beside the model)")
        if not path.is_file():
            raise BenchError(f"{label} file not found: {path}")
    if opts.quant_table:
        from vlmserve.bench.quant import run_quant_table

        return run_quant_table(opts, progress)
    return run_inprocess(opts, progress)


def run_inprocess(opts: BenchOptions, progress: Progress) -> dict[str, Any]:
    from vlmserve.bench.inprocess import InProcessTarget, counters_delta
    from vlmserve.config import EngineConfig, ImageOptions
    from vlmserve.engine.factory import create_engine
    from vlmserve.images import image_token_count

    t0 = time.perf_counter()
    w = opts.workload
    if not opts.concurrency:
        w = replace(w, concurrency=())
    doc = _base_doc(replace(opts, workload=w), "in-process")
    facts = read_model_facts(opts.model)
    ctx = opts.ctx_size or auto_ctx(w, image_token_count(w.width, w.height))
    config = EngineConfig(model_path=opts.model, mmproj_path=opts.mmproj, n_ctx_per_slot=ctx,
                          n_parallel=w.max_concurrency, n_threads=opts.threads,
                          n_gpu_layers=opts.n_gpu_layers)
    progress.note("loading the model")
    phase_load = load_average()
    rss_before = current_rss_bytes()
    t_load = time.perf_counter()
    engine = create_engine(config)
    load_ms = (time.perf_counter() - t_load) * 1000
    with engine:
        info = engine.info
        target = InProcessTarget(engine, ImageOptions(max_edge=max(w.width, w.height)))
        questions = build_questions(target, w)
        doc["workload"]["questions"] = questions
        doc["workload"]["question_tokens"] = {k: target.count_text_tokens(v)
                                              for k, v in questions.items()}
        progress.start(planned_requests(w), "vlmserve")
        snaps = []
        result = measure(target, w, questions, progress.step,
                         on_measured_start=lambda: snaps.append(engine.snapshot()))
        counters = counters_delta(snaps[0], engine.snapshot())
        progress.close()
    peak = peak_rss_bytes()
    backend = backend_name(info.gpu_offload, opts.n_gpu_layers, info.system_info)
    doc["model"] = _model_json(facts, opts.mmproj, opts.demo_size, info)
    doc["machine"]["gpu"] = backend if backend != "CPU" else None
    doc["engine"] = {
        "backend": backend,
        "gpu_offload": info.gpu_offload,
        "n_gpu_layers": opts.n_gpu_layers,
        "threads": info.threads,
        "n_parallel": info.n_parallel,
        "n_ctx_per_slot": info.n_ctx_per_slot,
        "n_batch": info.n_batch,
        "kv_cache_bytes": facts.kv_bytes_per_cell * info.n_ctx_per_slot * info.n_parallel,
        "load_ms": round(load_ms, 2),
        "prefix_cache": config.prefix_cache,
        "image_cache_mb": config.image_cache_mb,
        "cpu_features": cpu_features(info.system_info),
        "system_info": info.system_info,
    }
    doc["results"] = {
        "summary": result["summary"],
        "runs": [s.as_json() for s in result["samples"]],
        "concurrency": result["levels"],
        "peak_rss_bytes": peak,
        "rss_before_load_bytes": rss_before,
        "engine_counters": counters,
        "load_average": {"start": phase_load, "end": load_average()},
    }
    if opts.roofline:
        progress.note("measuring memory bandwidth")
        s = result["summary"]
        doc["roofline"] = roofline_for(
            facts, decode_kv_cells(s, w.max_tokens),
            median(s["engine_decode_tok_s"]) or median(s["decode_tok_s"]), info.threads)
        # The bandwidth measured is the host's: a bound for CPU decoding only.
        doc["roofline"]["applies"] = backend == "CPU"
    if opts.baseline:
        doc["baseline"] = run_baseline_for(opts, w, questions, ctx, info.threads, progress)
        doc["comparison"] = compare(doc["results"], doc["baseline"], w)
    return _finish(doc, t0)


@functools.lru_cache(maxsize=4)
def _bandwidths(thread_counts: tuple[int, ...]):
    from vlmserve.bench.roofline import measure_bandwidth

    return measure_bandwidth(thread_counts)


def decode_kv_cells(summary: dict[str, Any] | None, max_tokens: int) -> float:
    """Mean context length while decoding: the prompt's cells plus half the output."""
    prompt = median(summary.get("prompt_tokens")) if summary else None
    return (prompt or 0) + max_tokens / 2


def roofline_for(facts: ModelFacts, kv_cells: float, achieved: float | None,
                 engine_threads: int) -> dict[str, Any]:
    """Roofline against the best bandwidth measured (all cores, or the engine's thread
    count when that is fewer and happens to measure higher on a busy machine), and
    separately at the engine's thread count."""
    from vlmserve.bench.roofline import roofline

    cores = os.cpu_count() or 1
    bandwidths = _bandwidths(tuple(sorted({cores, min(engine_threads, cores)})))
    best = max(bandwidths.values(), key=lambda b: b.gb_s)  # the machine's bandwidth
    out = roofline(facts, kv_cells, best, achieved)
    out["bandwidth_by_threads"] = {str(t): round(b.gb_s, 2) for t, b in bandwidths.items()}
    out["engine_threads"] = None
    if engine_threads < cores:
        at = roofline(facts, kv_cells, bandwidths[engine_threads], achieved)
        out["engine_threads"] = {"bandwidth": at["bandwidth"], "limit_tok_s": at["limit_tok_s"],
                                 "fraction": at["fraction"]}
    return out


def run_baseline_for(opts: BenchOptions, w: Workload, questions: dict[str, str], ctx: int,
                     threads: int, progress: Progress) -> dict[str, Any]:
    from vlmserve.bench.baseline import run_baseline

    if opts.baseline != "llama-cpp-python":
        raise BenchError(f"unknown baseline {opts.baseline!r}; the only one is llama-cpp-python")
    spec = {
        "model": str(opts.model), "mmproj": str(opts.mmproj), "n_ctx": ctx,
        "threads": threads, "n_gpu_layers": opts.n_gpu_layers,
        "flash_attn": opts.baseline_flash_attn,
        "workload": {"width": w.width, "height": w.height, "prompt_tokens": w.prompt_tokens,
                     "max_tokens": w.max_tokens, "runs": w.runs,
                     "concurrency": list(w.concurrency), "warmup": w.warmup},
        "questions": questions,
    }
    progress.start(planned_requests(w, target_concurrent=False), "llama-cpp-python")
    try:
        return run_baseline(spec, progress.step)
    finally:
        progress.close()


def compare(res: dict[str, Any], base: dict[str, Any], w: Workload) -> dict[str, Any]:
    """vlmserve / baseline for each comparable figure (times: < 1 is better)."""
    s, b = res["summary"], base["summary"]
    agg = {}
    base_levels = {lv["streams"]: lv for lv in base["concurrency"] if lv["pass"] == "cold"}
    for lv in res["concurrency"]:
        if lv["pass"] == "cold" and lv["streams"] in base_levels:
            agg[str(lv["streams"])] = ratio(lv["aggregate_tok_s"],
                                            base_levels[lv["streams"]]["aggregate_tok_s"])
    ours = [r["completion_tokens"] for r in res["runs"]]
    theirs = [r["completion_tokens"] for r in base["runs"]]
    q = median(s.get("question_tokens"))
    return {
        "cold_ttft": ratio(median(s["cold_ttft_ms"]), median(b["cold_ttft_ms"])),
        "warm_ttft": ratio(median(s["warm_ttft_ms"]), median(b["warm_ttft_ms"])),
        "warm_cold_ratio": ratio(median(s["warm_cold_ratio"]), median(b["warm_cold_ratio"])),
        "decode_tok_s": ratio(median(s["decode_tok_s"]), median(b["decode_tok_s"])),
        "aggregate_tok_s": agg,
        "peak_rss": ratio(res.get("peak_rss_bytes"), base.get("peak_rss_bytes")),
        "completion_tokens": {"vlmserve": ours, "baseline": theirs},
        "completion_tokens_match": ours == theirs and all(n == w.max_tokens for n in ours),
        "question_tokens": {"vlmserve": q, "baseline": base.get("question_tokens")},
        "question_tokens_match": all(v == w.prompt_tokens
                                     for v in (base.get("question_tokens") or {}).values())
        and q == w.prompt_tokens,
    }


# ---------------------------------------------------------------------------- http


def run_http(opts: BenchOptions, progress: Progress) -> dict[str, Any]:
    from vlmserve.bench.http import HttpTarget

    t0 = time.perf_counter()
    w = opts.workload if opts.concurrency else replace(opts.workload, concurrency=())
    doc = _base_doc(replace(opts, workload=w), "http")
    target = HttpTarget(opts.url, api_key=opts.api_key)
    try:
        questions = build_questions(target, w)
        doc["workload"]["questions"] = questions
        doc["workload"]["question_tokens"] = {k: target.count_text_tokens(v)
                                              for k, v in questions.items()}
        progress.start(planned_requests(w), "vlmserve (HTTP)")
        result = measure(target, w, questions, progress.step)
        progress.close()
    finally:
        target.close()
    facts = read_model_facts(opts.model) if opts.model and opts.model.is_file() else None
    doc["model"] = _model_json(facts, opts.mmproj, None)
    doc["model"]["served_as"] = target.model
    doc["engine"] = {"backend": None, "url": target.base_url, "threads": None}
    doc["results"] = {
        "summary": result["summary"],
        "runs": [s.as_json() for s in result["samples"]],
        "concurrency": result["levels"],
        "peak_rss_bytes": None,
        "rss_before_load_bytes": None,
        "engine_counters": None,
    }
    if opts.roofline and facts:
        s = result["summary"]
        doc["roofline"] = roofline_for(facts, decode_kv_cells(s, w.max_tokens),
                                       median(s["decode_tok_s"]), opts.threads or 1)
        doc["roofline"]["applies"] = None  # the server's backend is unknown from here
    return _finish(doc, t0)

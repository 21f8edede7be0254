"""Orchestration: options in, one JSON-ready document out (in process, HTTP, quant table)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlmserve.bench.document import base_doc, compare, finish, model_json, results_json
from vlmserve.bench.gguf_facts import read_model_facts
from vlmserve.bench.machine import current_rss_bytes, load_average, peak_rss_bytes
from vlmserve.bench.phase_bar import PhaseBar
from vlmserve.bench.roofline import decode_kv_cells, roofline_for
from vlmserve.bench.runner import build_questions, measure, planned_requests
from vlmserve.bench.summary import median
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
    demo_vocab: str = "demo"  # "qwen": the real 151,936-token vocabulary (demo-model --vocab)
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
def demo_model(size: str, folder: Path | None, vocab: str = "demo"
               ) -> Iterator[tuple[Path, Path]]:
    """Write (or reuse, in ``folder``) a demo model, in a child process so that the
    writer's numpy buffers never count towards this process's peak RSS."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vlmbench-")))
        folder.mkdir(parents=True, exist_ok=True)
        model, mmproj, stamp = folder / "model.gguf", folder / "mmproj.gguf", folder / DEMO_STAMP
        wanted = {"size": size, "seed": 0, **({"vocab": vocab} if vocab != "demo" else {})}
        fresh = (model.is_file() and mmproj.is_file() and stamp.is_file()
                 and json.loads(stamp.read_text() or "{}") == wanted)
        if not fresh:
            stamp.unlink(missing_ok=True)
            proc = subprocess.run([sys.executable, "-m", "vlmserve.cli.main", "demo-model",
                                   str(folder), "--size", size, "--vocab", vocab],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
                raise BenchError(f"could not write the {size} demo model: {tail}")
            stamp.write_text(json.dumps(wanted))
        yield model, mmproj


# ---------------------------------------------------------------------------- in process


def run(opts: BenchOptions, progress: PhaseBar) -> dict[str, Any]:
    if opts.url:
        return run_http(opts, progress)
    if opts.demo_size:
        with demo_model(opts.demo_size, opts.demo_dir, opts.demo_vocab) as (model, mmproj):
            return _run_local(replace(opts, model=model, mmproj=mmproj), progress)
    return _run_local(opts, progress)


def _run_local(opts: BenchOptions, progress: PhaseBar) -> dict[str, Any]:
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


def run_inprocess(opts: BenchOptions, progress: PhaseBar) -> dict[str, Any]:
    from vlmserve.bench.inprocess import InProcessTarget, counters_delta
    from vlmserve.bench.workload import BENCH_TOKENS
    from vlmserve.config import EngineConfig, ImageOptions
    from vlmserve.engine.factory import create_engine
    from vlmserve.images import image_token_count

    t0 = time.perf_counter()
    w = opts.workload
    if not opts.concurrency:
        w = replace(w, concurrency=())
    doc = base_doc(w, opts.command, "in-process")
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
        target = InProcessTarget(engine, ImageOptions(max_edge=max(w.width, w.height),
                                                        tokens=BENCH_TOKENS))
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
    doc["model"] = model_json(facts, opts.mmproj, opts.demo_size, info, opts.demo_vocab)
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
    doc["results"] = results_json(result, peak_rss_bytes=peak, rss_before_load_bytes=rss_before,
                                  engine_counters=counters,
                                  load_average={"start": phase_load, "end": load_average()})
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
    return finish(doc, t0)


def run_baseline_for(opts: BenchOptions, w: Workload, questions: dict[str, str], ctx: int,
                     threads: int, progress: PhaseBar) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------- http


def run_http(opts: BenchOptions, progress: PhaseBar) -> dict[str, Any]:
    from vlmserve.bench.http import HttpTarget

    t0 = time.perf_counter()
    w = opts.workload if opts.concurrency else replace(opts.workload, concurrency=())
    doc = base_doc(w, opts.command, "http")
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
    doc["model"] = model_json(facts, opts.mmproj, None)
    doc["model"]["served_as"] = target.model
    doc["engine"] = {"backend": None, "url": target.base_url, "threads": None}
    doc["results"] = results_json(result)
    if opts.roofline and facts:
        s = result["summary"]
        doc["roofline"] = roofline_for(facts, decode_kv_cells(s, w.max_tokens),
                                       median(s["decode_tok_s"]), opts.threads or 1)
        doc["roofline"]["applies"] = None  # the server's backend is unknown from here
    return finish(doc, t0)

"""The quantization table: one F16 model, quantized by llama.cpp, each run alone.

Each quantization runs in its own ``vlmserve bench`` child process (one stream,
no concurrency levels, no roofline) so that its peak RSS is its own. Memory "in
use" is llama.cpp's model size plus the KV cache the context allocates; the
roofline fraction uses one bandwidth measurement made here, in the parent.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vlmserve.bench.document import base_doc, finish, model_json
from vlmserve.bench.gguf_facts import read_model_facts
from vlmserve.bench.roofline import decode_kv_cells, machine_bandwidths, roofline_for
from vlmserve.bench.summary import median
from vlmserve.bench.workload import BenchError

QUANT_TABLE_TYPES = ("F16", "Q8_0", "Q5_K_S", "Q4_K_M")


def _child_command(opts, model: Path, out: Path) -> list[str]:
    w = opts.workload
    cmd = [sys.executable, "-m", "vlmserve.cli.main", "bench", "--model", str(model),
           "--mmproj", str(opts.mmproj), "--image", f"{w.width}x{w.height}",
           "--prompt-tokens", str(w.prompt_tokens), "--max-tokens", str(w.max_tokens),
           "--runs", str(w.runs), "--threads", str(opts.threads),
           "--n-gpu-layers", str(opts.n_gpu_layers), "--no-concurrency", "--no-roofline",
           "--no-progress", "--json", str(out)]
    if opts.ctx_size:
        cmd += ["--ctx-size", str(opts.ctx_size)]
    return cmd


def run_quant_table(opts, progress) -> dict[str, Any]:
    t0 = time.perf_counter()
    source = read_model_facts(opts.model)
    if source.quant_type not in ("F16", "F32", "BF16"):
        raise BenchError(f"--quant-table needs an F16 (or F32/BF16) model to quantize; "
                         f"{opts.model} is {source.quant_type}")
    doc = base_doc(opts.workload, opts.command, "quant-table")
    doc["workload"]["concurrency"] = []  # one stream at a time
    doc["model"] = model_json(source, opts.mmproj, opts.demo_size, demo_vocab=opts.demo_vocab)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        folder = (opts.demo_dir if opts.demo_dir else
                  Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vlmquant-"))))
        progress.start(2 * len(QUANT_TABLE_TYPES) - 1, "quantization table")
        for qtype in QUANT_TABLE_TYPES:
            path = opts.model if qtype == source.quant_type else folder / f"model-{qtype}.gguf"
            if path != opts.model:
                progress.note(f"quantizing to {qtype}")
                _quantize(opts.model, path, qtype, opts.threads)
                progress.step(f"{qtype} written")
            progress.note(f"running {qtype}")
            row, child = _run_one(opts, path, qtype, folder)
            rows.append(row)
            if doc["engine"] is None:  # the F16 child's engine facts stand for all rows
                doc["engine"] = child["engine"]
                doc["machine"]["gpu"] = child["machine"]["gpu"]
            progress.step(f"{qtype} measured")
        progress.close()
        progress.note("measuring memory bandwidth")
        facts_by_quant = {r["quant"]: read_model_facts(r["path"]) for r in rows}
        bandwidths: dict[int, Any] = {}  # measured once per thread count, not per row
        for row in rows:
            threads = row["threads"] or 1
            if threads not in bandwidths:
                bandwidths[threads] = machine_bandwidths(threads)
            rl = roofline_for(facts_by_quant[row["quant"]],
                              decode_kv_cells(row, opts.workload.max_tokens),
                              median(row["engine_decode_tok_s"]), threads, bandwidths[threads])
            row["roofline_fraction"] = rl["fraction"]
            row["roofline_limit_tok_s"] = rl["limit_tok_s"]
            doc["roofline"] = {"bandwidth": rl["bandwidth"], "counted": rl["counted"]}
    doc["quant_table"] = rows
    return finish(doc, t0)


def _quantize(src: Path, dst: Path, qtype: str, threads: int) -> None:
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return  # reused from --demo-dir
    from vlmserve.engine.llamacpp.quantize import quantize_gguf

    quantize_gguf(src, dst, qtype, threads=threads)


def _run_one(opts, model: Path, qtype: str, folder: Path) -> tuple[dict[str, Any], dict]:
    out = folder / f"bench-{qtype}.json"
    cmd = _child_command(opts, model, out)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise BenchError(f"the {qtype} run failed ({shlex.join(cmd[3:6])}...): {tail}")
    child = json.loads(out.read_text())
    s, eng, model_info = child["results"]["summary"], child["engine"], child["model"]
    kv = eng["kv_cache_bytes"]
    return {
        "quant": qtype,
        "path": str(model),
        "file_size_bytes": model_info["file_size_bytes"],
        "llama_model_size_bytes": model_info["llama_model_size_bytes"],
        "kv_cache_bytes": kv,
        "memory_bytes": (model_info["llama_model_size_bytes"] or 0) + (kv or 0),
        "peak_rss_bytes": child["results"]["peak_rss_bytes"],
        "threads": eng["threads"],
        "cold_ttft_ms": s["cold_ttft_ms"],
        "warm_ttft_ms": s["warm_ttft_ms"],
        "image_encode_ms": s["image_encode_ms"],
        "prefill_tok_s": s["prefill_tok_s"],
        "decode_tok_s": s["decode_tok_s"],
        "engine_decode_tok_s": s["engine_decode_tok_s"],
        "prompt_tokens": s["prompt_tokens"],
        "completion_ok": s["completion_ok"],
        "load_average": child["load_average"],
    }, child

"""The benchmark's JSON document: its schema (``FIELDS``) and its assembly, side by side.

``FIELDS`` documents every key of the JSON document (dotted paths; ``[]`` for
list items). It is the stable schema: tests check that a real run writes every
field listed here, and BENCHMARKS.md prints this table. A "summary" value is
``{"median", "min", "max", "n", "values"}`` over the measured runs (or null when
nothing was measured, e.g. engine-side figures in --url mode). The builders below
are the only code that writes a section, so a field added here is added once for
every mode (in process, HTTP, quantization table, baseline).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vlmserve.bench import SCHEMA_VERSION
from vlmserve.bench.gguf_facts import ModelFacts
from vlmserve.bench.machine import load_average, run_header
from vlmserve.bench.summary import median, ratio
from vlmserve.bench.workload import Workload

SUMMARY = "summary {median, min, max, n, values}"

FIELDS: dict[str, str] = {
    "schema": "schema id, 'vlmserve-bench/1'",
    "command": "the exact command line (shell-quoted)",
    "date": "UTC start time, ISO 8601",
    "duration_s": "wall time of the whole benchmark",
    "mode": "'in-process' (engine in this process), 'http' (--url) or 'quant-table'",
    "machine.cpu_model": "from /proc/cpuinfo",
    "machine.logical_cores": "os.cpu_count()",
    "machine.physical_cores": "distinct core ids in /proc/cpuinfo",
    "machine.usable_cores": "CPUs this process may run on (affinity)",
    "machine.last_level_cache_bytes": "largest CPU cache (sysfs)",
    "machine.memory_total_bytes": "RAM",
    "machine.os": "kernel",
    "machine.gpu": "GPU backend when layers are offloaded, else null",
    "load_average.start": "os.getloadavg() before measuring (1, 5, 15 min)",
    "load_average.end": "os.getloadavg() after measuring",
    "versions.vlmserve": "package version",
    "versions.llama_cpp_python": "package version",
    "versions.gguf": "package version",
    "workload.image": "[width, height] of the generated PNG",
    "workload.prompt_tokens": "text tokens of each question (exact, by the model's tokenizer)",
    "workload.max_tokens": "output tokens forced per request (greedy)",
    "workload.runs": "measured cold+warm pairs",
    "workload.warmup": "unmeasured requests first",
    "workload.concurrency": "stream counts measured",
    "workload.questions": "{cold, warm}: the two question texts",
    "workload.question_tokens": "{cold, warm}: their tokens, counted by the target's tokenizer",
    "model.path": "text model GGUF",
    "model.mmproj_path": "vision projector GGUF",
    "model.demo_size": "demo size when --demo, else null",
    "model.random_weights": "true for demo models, null when unknown",
    "model.demo_vocab": "demo models: 'demo' (small trained BPE) or 'qwen' (real 151,936 tokens)",
    "model.name": "general.name",
    "model.quant_type": "general.file_type as a name (F16, Q8_0, Q4_K_M...)",
    "model.file_size_bytes": "text model file size",
    "model.mmproj_file_size_bytes": "projector file size",
    "model.n_params": "text model parameters (llama.cpp), null in --url mode",
    "model.llama_model_size_bytes": "llama.cpp's model size, null in --url mode",
    "model.weight_bytes_per_token": "bytes one decode step reads (see roofline.counted)",
    "engine.backend": "'CPU', or the GPU backend (CUDA, Metal, Vulkan...) when offloading",
    "engine.gpu_offload": "llama.cpp build supports GPU offload",
    "engine.threads": "llama.cpp threads",
    "engine.n_parallel": "slots (= the largest concurrency level)",
    "engine.n_ctx_per_slot": "KV cells per slot",
    "engine.kv_cache_bytes": "F16 K+V for all slots (computed from the GGUF shape)",
    "engine.load_ms": "model + projector load time",
    "engine.cpu_features": "SIMD features llama.cpp reports",
    "engine.system_info": "llama_print_system_info()",
    "results.summary.image_encode_ms": f"{SUMMARY}: vision encoder time, cold runs",
    "results.summary.cold_ttft_ms": f"{SUMMARY}: new picture; client clock from the PNG "
                                    "bytes to the first streamed text",
    "results.summary.warm_ttft_ms": f"{SUMMARY}: same picture, new question",
    "results.summary.warm_cold_ratio": f"{SUMMARY}: per-run warm/cold TTFT",
    "results.summary.engine_cold_ttft_ms": f"{SUMMARY}: engine clock, submit to first token",
    "results.summary.engine_warm_ttft_ms": SUMMARY,
    "results.summary.engine_warm_cold_ratio": SUMMARY,
    "results.summary.prefill_tok_s": f"{SUMMARY}: new prompt cells / prefill time, cold runs",
    "results.summary.decode_tok_s": f"{SUMMARY}: single stream, tokens after the first / "
                                    "time after the first (client clock)",
    "results.summary.engine_decode_tok_s": f"{SUMMARY}: the same on the engine clock",
    "results.summary.cold_cached_tokens": f"{SUMMARY}: prompt cells reused on cold runs "
                                          "(the chat template's first tokens at most)",
    "results.summary.warm_cached_tokens": f"{SUMMARY}: prompt cells reused on warm runs",
    "results.summary.prompt_tokens": f"{SUMMARY}: KV cells of the cold prompt (image incl.)",
    "results.summary.question_tokens": f"{SUMMARY}: measured text tokens of the question",
    "results.summary.completion_tokens": "list: output tokens of every measured run",
    "results.summary.completion_ok": "every run produced exactly max_tokens",
    "results.runs[]": "one record per measured request (kind cold|warm, all figures)",
    "results.concurrency[].streams": "N streams started together, each its own picture",
    "results.concurrency[].pass": "'cold' (new pictures) or 'warm' (same, new question)",
    "results.concurrency[].mode": "'concurrent', or 'sequential' for the baseline",
    "results.concurrency[].wall_ms": "first request start to last request end",
    "results.concurrency[].completion_tokens": "total over the N streams",
    "results.concurrency[].aggregate_tok_s": "completion_tokens / wall time",
    "results.concurrency[].decode_phase_tok_s": "tokens/s while all N streams decoded "
                                                "(null when they barely overlapped)",
    "results.concurrency[].per_stream_decode_tok_s": SUMMARY,
    "results.concurrency[].ttft_ms": SUMMARY,
    "results.concurrency[].completion_ok": "every stream produced exactly max_tokens",
    "results.peak_rss_bytes": "peak RSS of the benchmark process (ru_maxrss)",
    "results.rss_before_load_bytes": "RSS just before the model was loaded",
    "results.load_average": "{start, end} of the vlmserve phase (the baseline has its own)",
    "results.engine_counters": "engine counters over the measured requests: image cache "
                               "hits/misses, prefix_tokens_reused, mean/max_batch_tokens...",
    "roofline.bandwidth.gb_s": "measured memory bandwidth: best over the thread counts tried "
                               "(all cores, and the engine's thread count)",
    "roofline.bandwidth_by_threads": "{threads: GB/s} for each thread count measured",
    "roofline.bandwidth.method": "how it was measured",
    "roofline.bytes_per_token": "weights + KV read per decode step",
    "roofline.counted": "what bytes_per_token counts",
    "roofline.limit_tok_s": "bandwidth / bytes_per_token",
    "roofline.achieved_tok_s": "median single-stream decode tok/s (engine clock)",
    "roofline.fraction": "achieved / limit",
    "roofline.applies": "true when decoding ran on the CPU whose memory was measured (false "
                        "for GPU offload, null over --url)",
    "roofline.weights_exceed_llc": "false: weights fit in cache, the limit does not apply",
    "roofline.engine_threads": "the same at the engine's thread count (or null)",
    "baseline": "null, or the llama-cpp-python run: name, version, handler, api, threads, "
                "flash_attn, capped_runs, load_ms (projector excluded: it loads at the first "
                "request), load_average, peak_rss_bytes, question_tokens, summary, runs, "
                "concurrency (same shapes as results)",
    "comparison": "null, or vlmserve / baseline ratios: cold_ttft, warm_ttft, "
                  "warm_cold_ratio, decode_tok_s, aggregate_tok_s per level, peak_rss; and "
                  "question_tokens_match, completion_tokens_match",
    "quant_table": "null, or one row per quantization: quant, file_size_bytes, "
                   "llama_model_size_bytes, kv_cache_bytes, memory_bytes, peak_rss_bytes, "
                   "cold/warm TTFT, prefill and decode tok/s, roofline_fraction",
}


def get_path(doc: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(present, value) of a FIELDS path; ``a[].b`` checks ``b`` in every item of ``a``."""
    node: Any = doc
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.endswith("[]"):
            items = node.get(part[:-2]) if isinstance(node, dict) else None
            if not isinstance(items, list):
                return False, None
            rest = ".".join(parts[i + 1:])
            if not rest:
                return True, items
            return all(get_path(item, rest)[0] for item in items) and bool(items), items
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


# ---------------------------------------------------------------------------- assembly


def base_doc(w: Workload, command: str, mode: str) -> dict[str, Any]:
    """Every top-level key of the document, in order; the sections a run fills are None."""
    return {
        **run_header(SCHEMA_VERSION, command, mode),
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


def model_json(facts: ModelFacts | None, mmproj: Path | None, demo_size: str | None,
               info: Any = None, demo_vocab: str = "demo") -> dict[str, Any]:
    """The ``model`` section: GGUF facts, and llama.cpp's own figures when loaded (``info``)."""
    return {
        "path": facts.path if facts else None,
        "mmproj_path": str(mmproj) if mmproj else None,
        "demo_size": demo_size,
        "random_weights": True if demo_size else None,
        "demo_vocab": demo_vocab if demo_size else None,
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


def measured_json(result: dict[str, Any]) -> dict[str, Any]:
    """``runner.measure``'s result as the document writes it (vlmserve and the baseline)."""
    return {
        "summary": result["summary"],
        "runs": [s.as_json() for s in result["samples"]],
        "concurrency": result["levels"],
    }


def results_json(result: dict[str, Any], *, peak_rss_bytes: int | None = None,
                 rss_before_load_bytes: int | None = None,
                 engine_counters: dict[str, Any] | None = None,
                 **phase: Any) -> dict[str, Any]:
    """The ``results`` section; ``phase`` adds the in-process ``load_average``."""
    return {
        **measured_json(result),
        "peak_rss_bytes": peak_rss_bytes,
        "rss_before_load_bytes": rss_before_load_bytes,
        "engine_counters": engine_counters,
        **phase,
    }


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


def finish(doc: dict[str, Any], t0: float) -> dict[str, Any]:
    """Stamp the end: load average and wall time since ``t0`` (``time.perf_counter``)."""
    doc["load_average"]["end"] = load_average()
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    return doc

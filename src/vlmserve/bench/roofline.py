"""Memory bandwidth of this machine and the bandwidth-bound limit of decoding.

Single-stream decoding reads every weight of the text model once per token
(plus the KV cache written so far), so on a CPU its speed is bounded by
``bandwidth / bytes_per_token``. We measure the bandwidth with numpy over
buffers far larger than the last-level cache, in parallel threads (numpy
releases the GIL in these loops), best of several passes:

* read: ``sum()`` over an int64 buffer, bytes / time;
* copy: ``copyto`` between two buffers, counted as 2 x bytes / time (the STREAM
  convention: one read, one write).

The larger of the two (and the best over the thread counts measured) is the
machine's bandwidth: the highest figure gives the highest limit, so the fraction
we report for vlmserve is the conservative one.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlmserve.bench.gguf_facts import ModelFacts
from vlmserve.bench.machine import last_level_cache_bytes, memory_total_bytes
from vlmserve.bench.summary import median

MiB = 1024 * 1024


@dataclass(frozen=True)
class Bandwidth:
    gb_s: float  # max(read, copy): the figure the limit uses
    read_gb_s: float
    copy_gb_s: float
    threads: int
    buffer_bytes: int
    passes: int

    def as_json(self) -> dict[str, object]:
        return {
            "gb_s": round(self.gb_s, 2),
            "read_gb_s": round(self.read_gb_s, 2),
            "copy_gb_s": round(self.copy_gb_s, 2),
            "threads": self.threads,
            "buffer_bytes": self.buffer_bytes,
            "passes": self.passes,
            "method": "numpy, threads over slices of one buffer, best of passes: "
                      "read = int64 sum (bytes/s), copy = copyto (2 x bytes/s, STREAM "
                      "convention); gb_s = max(read, copy); 1 GB = 1e9 bytes",
        }


def default_buffer_bytes() -> int:
    """4x the last-level cache, at least 512 MiB, at most 1/8 of RAM."""
    llc = last_level_cache_bytes() or 32 * MiB
    size = max(512 * MiB, 4 * llc)
    total = memory_total_bytes()
    if total:
        size = min(size, total // 8)
    return max(64 * MiB, size // MiB * MiB)


def _parallel(threads: int, work) -> float:
    """Run ``work(i)`` in ``threads`` threads at once; the wall time of the slowest."""
    barrier = threading.Barrier(threads + 1)

    def body(i: int) -> None:
        barrier.wait()
        work(i)

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def measure_bandwidth(thread_counts: tuple[int, ...], buffer_bytes: int | None = None,
                      passes: int = 5) -> dict[int, Bandwidth]:
    """Bandwidth for each thread count, over the same two buffers (allocated once)."""
    size = buffer_bytes or default_buffer_bytes()
    n = size // 8
    src = np.ones(n, dtype=np.int64)  # every page touched before timing
    dst = np.ones(n, dtype=np.int64)
    nbytes = n * 8
    out: dict[int, Bandwidth] = {}
    for threads in sorted({max(1, t) for t in thread_counts}):
        bounds = np.linspace(0, n, threads + 1).astype(np.int64)
        parts = [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(threads)]

        def read(i: int, parts: list[slice] = parts) -> None:
            src[parts[i]].sum()

        def copy(i: int, parts: list[slice] = parts) -> None:
            np.copyto(dst[parts[i]], src[parts[i]])

        best_read = min(_parallel(threads, read) for _ in range(passes))
        best_copy = min(_parallel(threads, copy) for _ in range(passes))
        read_gb_s, copy_gb_s = nbytes / best_read / 1e9, 2 * nbytes / best_copy / 1e9
        out[threads] = Bandwidth(max(read_gb_s, copy_gb_s), read_gb_s, copy_gb_s, threads,
                                 nbytes, passes)
    return out


def roofline(facts: ModelFacts, kv_cells: float, bandwidth: Bandwidth,
             achieved_tok_s: float | None) -> dict[str, object]:
    """The decode limit for one stream and how close ``achieved_tok_s`` comes to it.

    ``kv_cells``: mean context length during decoding (prompt + half the output):
    each step reads that many cells of K and V.
    """
    weights = facts.weight_bytes_per_token
    kv = int(facts.kv_bytes_per_cell * kv_cells)
    per_token = weights + kv
    limit = bandwidth.gb_s * 1e9 / per_token if per_token else None
    limit_weights = bandwidth.gb_s * 1e9 / weights if weights else None
    llc = last_level_cache_bytes()
    return {
        "bandwidth": bandwidth.as_json(),
        "weight_bytes_per_token": weights,
        "kv_bytes_per_token": kv,
        "bytes_per_token": per_token,
        "counted": "all repeated-layer tensors + output norm + LM head (output.weight, or "
                   "token_embd when tied) + K/V cache at the mean decode context (F16); "
                   "the token-embedding lookup (one row) is not counted",
        "limit_tok_s": round(limit, 2) if limit else None,
        "limit_weights_only_tok_s": round(limit_weights, 2) if limit_weights else None,
        "achieved_tok_s": round(achieved_tok_s, 2) if achieved_tok_s else None,
        "fraction": round(achieved_tok_s / limit, 3) if achieved_tok_s and limit else None,
        "weights_exceed_llc": bool(llc and weights > llc),
        "last_level_cache_bytes": llc,
    }


def decode_kv_cells(summary: dict[str, Any] | None, max_tokens: int) -> float:
    """Mean context length while decoding: the prompt's cells plus half the output."""
    prompt = median(summary.get("prompt_tokens")) if summary else None
    return (prompt or 0) + max_tokens / 2


def machine_bandwidths(engine_threads: int) -> dict[int, Bandwidth]:
    """Bandwidth with all cores, and with the engine's thread count when that is fewer."""
    cores = os.cpu_count() or 1
    return measure_bandwidth(tuple(sorted({cores, min(engine_threads, cores)})))


def roofline_for(facts: ModelFacts, kv_cells: float, achieved: float | None,
                 engine_threads: int,
                 bandwidths: dict[int, Bandwidth] | None = None) -> dict[str, Any]:
    """Roofline against the best bandwidth measured (all cores, or the engine's thread
    count when that is fewer and happens to measure higher on a busy machine), and
    separately at the engine's thread count.

    ``bandwidths`` (from ``machine_bandwidths``) lets a caller that needs several
    rooflines on one machine (the quantization table) measure once.
    """
    cores = os.cpu_count() or 1
    if bandwidths is None:
        bandwidths = machine_bandwidths(engine_threads)
    best = max(bandwidths.values(), key=lambda b: b.gb_s)  # the machine's bandwidth
    out = roofline(facts, kv_cells, best, achieved)
    out["bandwidth_by_threads"] = {str(t): round(b.gb_s, 2) for t, b in bandwidths.items()}
    out["engine_threads"] = None
    if engine_threads < cores:
        at = roofline(facts, kv_cells, bandwidths[engine_threads], achieved)
        out["engine_threads"] = {"bandwidth": at["bandwidth"], "limit_tok_s": at["limit_tok_s"],
                                 "fraction": at["fraction"]}
    return out

"""``vlmserve bench --scenario stall``: does a new picture freeze everyone else's answer?

One run:

1. a *stream* asks about its own picture with a long greedy output and keeps decoding;
2. once it has streamed ``warm_tokens`` tokens (steady decoding), ``newcomers`` users
   send new, distinct pictures at the same moment (the *burst*; distinct pixels, so the
   image cache cannot help), each with a short question and ``newcomer_tokens`` outputs;
3. when the last newcomer is done, the stream is stopped (its request aborted).

Measured on the client's clock, from token arrival times only (so the engine in this
process, ``vlmserve serve`` and llama-server are measured alike): the stream's inter-token
gaps during the burst (median and worst; from burst start until the last newcomer's first
token, and until the last newcomer is done), the newcomers' TTFTs, the burst's wall time
and the aggregate tok/s over it. Every figure is a summary over ``runs`` runs; each run
uses new pictures (a per-invocation random base seed keeps repeated invocations against
one long-lived server from hitting its image cache).
"""

from __future__ import annotations

import io
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from vlmserve.bench.machine import load_average, run_header
from vlmserve.bench.stall_targets import StreamRecord
from vlmserve.bench.summary import summarize
from vlmserve.bench.workload import BenchError, make_picture

SCHEMA = "vlmserve-bench-stall/1"
STREAM_QUESTION = ("Describe this picture in as much detail as you can: every object, its "
                   "colour, its position, and how the parts of the scene relate.")
NEWCOMER_QUESTION = "What is in this picture?"


class StallTarget(Protocol):
    def stream(self, picture: bytes, question: str, max_tokens: int, record: StreamRecord,
               stop: threading.Event | None = None) -> StreamRecord: ...


@dataclass(frozen=True)
class StallWorkload:
    width: int = 768
    height: int = 768
    newcomers: int = 3
    newcomer_tokens: int = 32
    stream_tokens: int = 2048  # the stream's max_tokens: long enough to outlast the burst
    warm_tokens: int = 20  # the stream's tokens before the burst starts
    runs: int = 3
    warmup: bool = True  # one unmeasured newcomer-like request first
    seed_base: int = field(default_factory=lambda: 100_000 + secrets.randbelow(1 << 30))

    def __post_init__(self) -> None:
        if not 1 <= self.newcomers <= 32:
            raise BenchError(f"--newcomers must be in [1, 32], got {self.newcomers}")
        if not 1 <= self.newcomer_tokens <= 4096:
            raise BenchError(f"--newcomer-tokens must be in [1, 4096], got {self.newcomer_tokens}")
        if not 1 <= self.warm_tokens < self.stream_tokens:
            raise BenchError("--warm-tokens must be >= 1 and below --stream-tokens")
        if not 1 <= self.runs <= 100:
            raise BenchError(f"--runs must be in [1, 100], got {self.runs}")

    def stream_seed(self, run: int) -> int:
        return self.seed_base + 1000 * run

    def newcomer_seed(self, run: int, k: int) -> int:
        return self.seed_base + 1000 * run + 1 + k

    def warmup_seed(self) -> int:
        return self.seed_base - 1

    def picture(self, seed: int) -> bytes:
        return jpeg_picture(self.width, self.height, seed)


def jpeg_picture(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """The bench's deterministic picture, as the JPEG a phone would upload."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(make_picture(width, height, seed))).convert("RGB").save(
        buf, "JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------- figures


def token_times(arrivals: list[tuple[float, int]]) -> list[float]:
    """One time per token: a delta carrying n tokens delivers all n at its arrival."""
    return [t for t, n in arrivals for _ in range(n)]


def gaps_overlapping(times: list[float], t0: float, t1: float) -> list[float]:
    """Inter-token gaps (seconds) that overlap the window [t0, t1].

    Includes the gap that spans t0 (the last token before the burst to the next one) and
    the one that spans t1, so a stall that starts before or ends after the window counts
    whole.
    """
    return [b - a for a, b in zip(times, times[1:], strict=False) if a < t1 and b > t0]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _gap_figures(gaps: list[float]) -> dict[str, Any]:
    return {"median_ms": _ms(statistics.median(gaps)) if gaps else None,
            "max_ms": _ms(max(gaps)) if gaps else None, "n": len(gaps)}


def run_figures(stream: StreamRecord, newcomers: list[StreamRecord], t_burst: float,
                load_start: list[float], load_end: list[float]) -> dict[str, Any]:
    """Everything one run reports, from arrival times alone."""
    times = token_times(stream.arrivals)
    silent = [n for n in newcomers if n.t_first is None]
    if any(n.finish_reason is None for n in silent):
        raise BenchError("a newcomer's stream ended without a token or a finish reason")
    # A newcomer whose answer streamed no text (its first token was end-of-turn, or its
    # bytes never formed a character) got its answer when its stream ended.
    firsts = [n.t_end if n.t_first is None else n.t_first for n in newcomers]
    t_first_all = max(firsts)
    t_done = max(n.t_end for n in newcomers)
    before = [t for t in times if t <= t_burst]
    steady = before[min(5, max(0, len(before) - 2)):]  # skip the first few (prefill jitter)
    wall = t_done - t_burst
    stream_in_burst = sum(1 for t in times if t_burst <= t <= t_done)
    # The server's own count where it gives one: over HTTP a chunk can carry two tokens
    # (a character whose bytes span them), so chunks undercount.
    newcomer_tokens = [n.streamed_tokens if n.completion_tokens is None else n.completion_tokens
                       for n in newcomers]
    return {
        "stream": {
            "tokens_before_burst": len(before),
            "gap_before_burst_median_ms": _ms(statistics.median(
                [b - a for a, b in zip(steady, steady[1:], strict=False)])) if len(steady) > 1
            else None,
            "gaps_to_first_tokens": _gap_figures(gaps_overlapping(times, t_burst, t_first_all)),
            "gaps_to_done": _gap_figures(gaps_overlapping(times, t_burst, t_done)),
            "tokens_in_burst": stream_in_burst,
            "outlasted_burst": bool(times) and times[-1] >= t_done,
            "streamed_tokens": len(times),
            "finish_reason": stream.finish_reason,
            "stopped": stream.stopped,  # aborted by the bench once the burst was over
        },
        "newcomers": {
            "ttft_ms": [_ms(t - n.t_start) for n, t in zip(newcomers, firsts, strict=True)],
            "total_ms": [_ms(n.t_end - n.t_start) for n in newcomers],
            "start_spread_ms": _ms(max(n.t_start for n in newcomers)
                                   - min(n.t_start for n in newcomers)),
            "streamed_tokens": [n.streamed_tokens for n in newcomers],
            "completion_tokens": [n.completion_tokens for n in newcomers],
            "finish_reasons": [n.finish_reason for n in newcomers],
            "without_tokens": len(silent),
        },
        "burst_wall_ms": _ms(wall),
        "first_tokens_wall_ms": _ms(t_first_all - t_burst),
        "burst_tokens": stream_in_burst + sum(newcomer_tokens),
        "aggregate_tok_s": round((stream_in_burst + sum(newcomer_tokens)) / wall, 2)
        if wall > 0 else None,
        "load_average": {"start": load_start, "end": load_end},
    }


def summary_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Summaries over runs ({median, min, max, n, values}) of each headline figure."""
    def over(get: Callable[[dict[str, Any]], float | None]) -> dict[str, Any] | None:
        return summarize(get(r) for r in runs)

    return {
        "stream_gap_median_ms_to_first_tokens":
            over(lambda r: r["stream"]["gaps_to_first_tokens"]["median_ms"]),
        "stream_gap_max_ms_to_first_tokens":
            over(lambda r: r["stream"]["gaps_to_first_tokens"]["max_ms"]),
        "stream_gap_median_ms_to_done": over(lambda r: r["stream"]["gaps_to_done"]["median_ms"]),
        "stream_gap_max_ms_to_done": over(lambda r: r["stream"]["gaps_to_done"]["max_ms"]),
        "stream_gap_before_burst_ms": over(lambda r: r["stream"]["gap_before_burst_median_ms"]),
        "newcomer_ttft_median_ms": over(lambda r: statistics.median(r["newcomers"]["ttft_ms"])),
        "newcomer_ttft_max_ms": over(lambda r: max(r["newcomers"]["ttft_ms"])),
        "burst_wall_ms": over(lambda r: r["burst_wall_ms"]),
        "first_tokens_wall_ms": over(lambda r: r["first_tokens_wall_ms"]),
        "aggregate_tok_s": over(lambda r: r["aggregate_tok_s"]),
        "stream_outlasted_burst": all(r["stream"]["outlasted_burst"] for r in runs),
        "newcomers_without_tokens": sum(r["newcomers"]["without_tokens"] for r in runs),
    }


# ---------------------------------------------------------------------------- protocol


def run_once(target: StallTarget, w: StallWorkload, run: int,
             timeout_s: float = 600.0) -> dict[str, Any]:
    """One stream, one burst of newcomers; the run's figures."""
    load_start = load_average()
    stream_picture = w.picture(w.stream_seed(run))
    pictures = [w.picture(w.newcomer_seed(run, k)) for k in range(w.newcomers)]
    stop = threading.Event()
    stream = StreamRecord()
    newcomers = [StreamRecord() for _ in pictures]
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                stop.set()
        return body

    stream_thread = threading.Thread(target=guarded(lambda: target.stream(
        stream_picture, STREAM_QUESTION, w.stream_tokens, stream, stop)),
        name="stall-stream", daemon=True)
    stream_thread.start()
    deadline = time.monotonic() + timeout_s
    while stream.streamed_tokens < w.warm_tokens:
        if errors:
            raise BenchError(f"the decoding stream failed: {errors[0]}") from errors[0]
        if not stream_thread.is_alive():
            raise BenchError(f"the decoding stream ended after {stream.streamed_tokens} tokens, "
                             f"before the burst (needs {w.warm_tokens})")
        if time.monotonic() > deadline:
            raise BenchError("the decoding stream did not start streaming in time")
        time.sleep(0.002)

    go = threading.Barrier(len(pictures))
    threads = [threading.Thread(target=guarded(lambda p=p, r=r: (go.wait(), target.stream(
        p, NEWCOMER_QUESTION, w.newcomer_tokens, r))), name=f"stall-newcomer-{k}", daemon=True)
        for k, (p, r) in enumerate(zip(pictures, newcomers, strict=True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    stop.set()
    stream_thread.join(max(1.0, deadline - time.monotonic()))
    if errors:
        raise BenchError(f"a stall request failed: {errors[0]}") from errors[0]
    if any(t.is_alive() for t in [*threads, stream_thread]):
        raise BenchError(f"the stall run did not finish within {timeout_s:.0f} s")
    t_burst = min(n.t_start for n in newcomers)
    return run_figures(stream, newcomers, t_burst, load_start, load_average())


def measure(target: StallTarget, w: StallWorkload,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    if w.warmup:
        progress("warm-up request")
        target.stream(w.picture(w.warmup_seed()), NEWCOMER_QUESTION, w.newcomer_tokens,
                      StreamRecord())
    runs = []
    for run in range(w.runs):
        progress(f"run {run + 1}/{w.runs}")
        runs.append(run_once(target, w, run))
    return {"summary": summary_of(runs), "runs": runs}


# ---------------------------------------------------------------------------- document


def base_doc(w: StallWorkload, mode: str, command: str) -> dict[str, Any]:
    return {
        **run_header(SCHEMA, command, mode, scenario="stall"),
        "workload": {
            "image": [w.width, w.height], "image_format": "jpeg", "newcomers": w.newcomers,
            "newcomer_tokens": w.newcomer_tokens, "stream_max_tokens": w.stream_tokens,
            "warm_tokens": w.warm_tokens, "runs": w.runs, "warmup": w.warmup,
            "sampling": "greedy (temperature 0)", "seed_base": w.seed_base,
            "stream_question": STREAM_QUESTION, "newcomer_question": NEWCOMER_QUESTION,
        },
        "model": None,
        "engine": None,
        "results": None,
    }


def finish_doc(doc: dict[str, Any], t0: float) -> dict[str, Any]:
    doc["load_average"]["end"] = load_average()
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    return doc


ROWS = (
    ("stream_gap_max_ms_to_first_tokens", "stream: worst gap, burst -> last newcomer's 1st token",
     "ms"),
    ("stream_gap_median_ms_to_first_tokens", "stream: median gap, same window", "ms"),
    ("stream_gap_max_ms_to_done", "stream: worst gap, burst -> all newcomers done", "ms"),
    ("stream_gap_median_ms_to_done", "stream: median gap, same window", "ms"),
    ("stream_gap_before_burst_ms", "stream: median gap before the burst", "ms"),
    ("newcomer_ttft_median_ms", "newcomers: median TTFT", "ms"),
    ("newcomer_ttft_max_ms", "newcomers: worst TTFT", "ms"),
    ("first_tokens_wall_ms", "burst start -> last newcomer's 1st token", "ms"),
    ("burst_wall_ms", "burst wall time (start -> last newcomer done)", "ms"),
    ("aggregate_tok_s", "aggregate tok/s over the burst", "tok/s"),
)


def render_markdown(doc: dict[str, Any]) -> str:
    w, s = doc["workload"], doc["results"]["summary"]
    eng = doc.get("engine") or {}
    where = f"http: {eng['url']}" if eng.get("url") else doc["mode"]
    lines = [
        f"### Stall scenario ({where})",
        "",
        f"{w['newcomers']} newcomers with new {w['image'][0]}x{w['image'][1]} pictures "
        f"({w['newcomer_tokens']} tokens each) while one stream decodes; "
        f"{w['runs']} runs; text threads {eng.get('threads')}, vision threads "
        f"{eng.get('threads_vision')}, slots {eng.get('n_parallel')}; load average "
        f"{_load(doc['load_average']['start'])} -> {_load(doc['load_average']['end'])}",
        "",
        "| figure | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label, unit in ROWS:
        v = s.get(key)
        if v is None:
            lines.append(f"| {label} | - | - | - |")
        else:
            lines.append(f"| {label} ({unit}) | {v['median']:.1f} | {v['min']:.1f} | "
                         f"{v['max']:.1f} |")
    if s.get("newcomers_without_tokens"):
        lines += ["", f"Note: {s['newcomers_without_tokens']} newcomer answer(s) streamed no "
                  "text (end-of-turn first): their TTFT is their stream's end."]
    if not s.get("stream_outlasted_burst"):
        lines += ["", "Warning: the stream ended before a burst did (raise --stream-tokens); "
                  "its gaps cover only the part it was running."]
    return "\n".join(lines) + "\n"


def _load(values: list[float] | None) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "?"


def default_parallel(newcomers: int) -> int:
    """One slot for the stream, one for each newcomer: nobody queues for a slot."""
    return newcomers + 1

"""The measurement protocol, the same for every target (in process, HTTP, baseline).

1. warm-up: one request on its own picture (pages the weights in, fills allocators);
2. ``runs`` x (cold, warm): a *new* picture with the first question (nothing about
   it is cached: a different image hashes differently, so the image cache misses
   and prefix reuse stops at the chat template's first few tokens), then the
   *same* picture with a different question of the same length (the image is in
   the image cache and its KV in a slot: only the new question is prefilled);
3. for each concurrency level N: N streams at once, each on its own new picture
   (cold pass), then the same N pictures with the second question (warm pass).
   Targets that cannot run requests concurrently run them one after another.

Every request is greedy with ``max_tokens`` forced; each sample records what the
client saw (time to the first streamed text, the stream's end) and, in process,
what the engine timed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from vlmserve.bench.summary import ratio, summarize
from vlmserve.bench.workload import (
    COLD_QUESTION,
    WARM_QUESTION,
    Workload,
    fit_question,
    make_picture,
)


@dataclass
class Sample:
    """One request: client-side times (perf_counter seconds) and the engine's figures."""

    t_start: float  # the client has the PNG bytes and starts
    t_first: float | None  # the first output token exists (see the targets)
    t_end: float  # the stream has ended
    completion_tokens: int
    t_first_text: float | None = None  # the first streamed text reached the client
    finish_reason: str | None = None
    kind: str = ""  # warmup | cold | warm | level
    seed: int = 0
    streamed_tokens: int | None = None  # token ids counted on the stream itself
    prompt_tokens: int | None = None  # KV cells of the prompt, image included
    question_tokens: int | None = None  # text tokens of the question alone
    image_tokens: int | None = None
    cached_tokens: int | None = None
    image_cache_hits: int | None = None
    image_encode_ms: float | None = None
    engine_ttft_ms: float | None = None
    prefill_ms: float | None = None
    prefill_tok_s: float | None = None
    engine_decode_tok_s: float | None = None
    token_times: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def ttft_ms(self) -> float | None:
        return None if self.t_first is None else (self.t_first - self.t_start) * 1000

    @property
    def total_ms(self) -> float:
        return (self.t_end - self.t_start) * 1000

    @property
    def first_text_ms(self) -> float | None:
        return None if self.t_first_text is None else (self.t_first_text - self.t_start) * 1000

    @property
    def decode_tok_s(self) -> float | None:
        """Tokens after the first / time from the first token to the end of the stream."""
        if self.t_first is None or self.t_end <= self.t_first or self.completion_tokens < 2:
            return None
        return (self.completion_tokens - 1) / (self.t_end - self.t_first)

    def as_json(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {
            "kind": self.kind,
            "image_seed": self.seed,
            "ttft_ms": r(self.ttft_ms),
            "first_text_ms": r(self.first_text_ms),
            "total_ms": r(self.total_ms),
            "decode_tok_s": r(self.decode_tok_s),
            "completion_tokens": self.completion_tokens,
            "streamed_tokens": self.streamed_tokens,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "question_tokens": self.question_tokens,
            "image_tokens": self.image_tokens,
            "cached_tokens": self.cached_tokens,
            "image_cache_hits": self.image_cache_hits,
            "image_encode_ms": r(self.image_encode_ms),
            "engine_ttft_ms": r(self.engine_ttft_ms),
            "prefill_ms": r(self.prefill_ms),
            "prefill_tok_s": r(self.prefill_tok_s),
            "engine_decode_tok_s": r(self.engine_decode_tok_s),
        }


class Target(Protocol):
    """Something that answers one image question with a token stream."""

    concurrent: bool  # may several requests run at once?

    def count_text_tokens(self, text: str) -> int: ...

    def request(self, png: bytes, question: str, max_tokens: int) -> Sample: ...


RequestDone = Callable[[str], None]  # called once per finished request with a short label


def planned_requests(w: Workload, target_concurrent: bool = True) -> int:
    levels = sum(w.concurrency) * (2 if target_concurrent else 1)
    return w.warmup + 2 * w.runs + levels


def build_questions(target: Target, w: Workload) -> dict[str, str]:
    return {"cold": fit_question(COLD_QUESTION, w.prompt_tokens, target.count_text_tokens),
            "warm": fit_question(WARM_QUESTION, w.prompt_tokens, target.count_text_tokens)}


class _Pictures:
    """PNG bytes per seed, generated once (the client's cost is decoding, not drawing)."""

    def __init__(self, w: Workload) -> None:
        self._w = w
        self._cache: dict[int, bytes] = {}

    def __call__(self, seed: int) -> bytes:
        if seed not in self._cache:
            self._cache[seed] = make_picture(self._w.width, self._w.height, seed)
        return self._cache[seed]


def _one(target: Target, png: bytes, question: str, w: Workload, kind: str, seed: int,
         progress: RequestDone) -> Sample:
    sample = target.request(png, question, w.max_tokens)
    sample.kind, sample.seed = kind, seed
    progress(kind)
    return sample


def measure(target: Target, w: Workload, questions: dict[str, str], progress: RequestDone,
            on_measured_start: Callable[[], None] | None = None) -> dict[str, object]:
    """Run the protocol; return the samples, the levels and their summaries (JSON-ready)."""
    pictures = _Pictures(w)
    for k in range(w.warmup):
        seed = w.warmup_seed(k)
        _one(target, pictures(seed), questions["cold"], w, "warmup", seed, progress)
    if on_measured_start:
        on_measured_start()
    samples: list[Sample] = []
    for run in range(w.runs):
        seed = w.cold_seed(run)
        samples.append(_one(target, pictures(seed), questions["cold"], w, "cold", seed, progress))
        samples.append(_one(target, pictures(seed), questions["warm"], w, "warm", seed, progress))
    levels = []
    for li, n in enumerate(w.concurrency):
        seeds = [w.level_seed(li, j) for j in range(n)]
        passes = ("cold", "warm") if target.concurrent else ("cold",)
        for pass_name in passes:
            items = [(pictures(s), questions[pass_name], s) for s in seeds]
            levels.append(_level(target, items, w, pass_name, progress))
    return {"samples": samples, "levels": levels,
            "summary": summarize_samples(samples, w)}


def _level(target: Target, items: list[tuple[bytes, str, int]], w: Workload, pass_name: str,
           progress: RequestDone) -> dict[str, object]:
    n = len(items)
    if target.concurrent:
        barrier = threading.Barrier(n)

        def go(item: tuple[bytes, str, int]) -> Sample:
            barrier.wait()
            return _one(target, item[0], item[1], w, f"level{n}-{pass_name}", item[2], progress)

        with ThreadPoolExecutor(max_workers=n) as pool:
            samples = list(pool.map(go, items))
    else:
        samples = [_one(target, png, q, w, f"level{n}-{pass_name}", s, progress)
                   for png, q, s in items]
    wall = max(s.t_end for s in samples) - min(s.t_start for s in samples)
    tokens = sum(s.completion_tokens for s in samples)
    return {
        "streams": n,
        "pass": pass_name,
        "mode": "concurrent" if target.concurrent else "sequential",
        "wall_ms": round(wall * 1000, 2),
        "completion_tokens": tokens,
        "completion_ok": all(s.completion_tokens == w.max_tokens for s in samples),
        "aggregate_tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "decode_phase_tok_s": _decode_phase(samples),
        "per_stream_decode_tok_s": summarize(s.decode_tok_s for s in samples),
        "ttft_ms": summarize(s.ttft_ms for s in samples),
        "cached_tokens": summarize(s.cached_tokens for s in samples),
    }


def _decode_phase(samples: list[Sample]) -> float | None:
    """Tokens per second while *all* streams were decoding; None when that window is
    too short to measure (streams that barely overlap)."""
    if any(s.t_first is None or not s.token_times for s in samples):
        return None
    start = max(s.t_first for s in samples)  # type: ignore[type-var]
    end = min(s.token_times[-1][0] for s in samples)
    tokens = sum(n for s in samples for t, n in s.token_times if start < t <= end)
    if end - start < 0.05 or tokens < 2 * len(samples):
        return None
    return round(tokens / (end - start), 2)


def summarize_samples(samples: list[Sample], w: Workload) -> dict[str, object]:
    cold = [s for s in samples if s.kind == "cold"]
    warm = [s for s in samples if s.kind == "warm"]
    ratios = [ratio(wm.ttft_ms, c.ttft_ms, 4) for c, wm in zip(cold, warm, strict=True)]
    engine_ratios = [ratio(wm.engine_ttft_ms, c.engine_ttft_ms, 4)
                     for c, wm in zip(cold, warm, strict=True)]
    cold_ttft, warm_ttft = summarize(s.ttft_ms for s in cold), summarize(s.ttft_ms for s in warm)
    both = cold + warm
    return {
        "image_encode_ms": summarize(s.image_encode_ms for s in cold),
        "cold_ttft_ms": cold_ttft,
        "warm_ttft_ms": warm_ttft,
        "cold_first_text_ms": summarize(s.first_text_ms for s in cold),
        "warm_first_text_ms": summarize(s.first_text_ms for s in warm),
        "warm_cold_ratio": summarize(ratios, 4),
        "engine_cold_ttft_ms": summarize(s.engine_ttft_ms for s in cold),
        "engine_warm_ttft_ms": summarize(s.engine_ttft_ms for s in warm),
        "engine_warm_cold_ratio": summarize(engine_ratios, 4),
        "prefill_tok_s": summarize(s.prefill_tok_s for s in cold),
        "warm_prefill_tok_s": summarize(s.prefill_tok_s for s in warm),
        "decode_tok_s": summarize(s.decode_tok_s for s in both),
        "engine_decode_tok_s": summarize(s.engine_decode_tok_s for s in both),
        "cold_cached_tokens": summarize((s.cached_tokens for s in cold), 0),
        "warm_cached_tokens": summarize((s.cached_tokens for s in warm), 0),
        "prompt_tokens": summarize((s.prompt_tokens for s in cold), 0),
        "question_tokens": summarize((s.question_tokens for s in both), 0),
        "completion_tokens": [s.completion_tokens for s in both],
        "completion_ok": all(s.completion_tokens == w.max_tokens for s in both),
        "finish_reasons": sorted({str(s.finish_reason) for s in both}),
        "total_ms": summarize(s.total_ms for s in both),
    }

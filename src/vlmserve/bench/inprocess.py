"""The in-process target: requests go straight to an ``EngineClient`` (no HTTP)."""

from __future__ import annotations

import itertools
import time
from dataclasses import fields

from vlmserve.bench.runner import Sample
from vlmserve.bench.workload import BENCH_TOKENS, BenchError
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.config import ImageOptions
from vlmserve.engine.client import EngineClient, EngineSnapshot
from vlmserve.engine.run_to_end import run_to_end
from vlmserve.engine.stats import EngineCounters
from vlmserve.images import prepare_image
from vlmserve.types import Prompt, Request, SamplingParams, TokenDelta


class InProcessTarget:
    """Each request: decode the PNG, render the chat, stream from the engine.

    The client-side clock starts before the PNG is decoded, so its TTFT covers
    everything a server does for a fresh upload: decode, resize and hash the
    picture, render the chat, then the engine's submit-to-first-token time
    (kept beside it as ``engine_ttft_ms``). The first *text* can come a few
    tokens later when a character spans tokens (``first_text_ms``).
    """

    concurrent = True

    def __init__(self, engine: EngineClient, image_options: ImageOptions | None = None) -> None:
        self.engine = engine
        self.renderer = ChatRenderer.for_model(engine.info.chat_template)
        self.image_options = image_options or ImageOptions(max_edge=8192, tokens=BENCH_TOKENS)
        self._ids = itertools.count()

    def count_text_tokens(self, text: str) -> int:
        return self.engine.count_prompt_tokens(Prompt((text,)))

    def request(self, png: bytes, question: str, max_tokens: int) -> Sample:
        t_start = time.perf_counter()
        image = prepare_image(png, self.image_options)
        prompt = self.renderer.render([ChatMessage.user(question, image)])
        request = Request(f"bench-{next(self._ids)}", prompt,
                          SamplingParams(max_tokens=max_tokens, temperature=0.0))
        token_times: list[tuple[float, int]] = []  # (when, tokens) of each delta with tokens

        def timed(delta: TokenDelta) -> None:
            if delta.token_ids:
                token_times.append((time.perf_counter(), len(delta.token_ids)))

        t_submit = time.perf_counter()
        end = run_to_end(self.engine, request, timed)
        if end is None:  # pragma: no cover - generate_sync always ends with a finished delta
            raise BenchError("the engine stream ended without a final delta")
        if end.error is not None:
            raise BenchError(f"the engine failed a benchmark request: {end.error.message}")
        stats = end.stats
        t_first_text = token_times[0][0] if token_times else None
        streamed = sum(n for _, n in token_times)
        t_end = time.perf_counter()
        without_question = self.renderer.render([ChatMessage.user("", image)])
        # The engine times its first token from submit: put it on the client's clock.
        t_first = t_submit + stats.ttft_ms / 1000 if stats.ttft_ms else None
        return Sample(
            t_start=t_start, t_first=t_first, t_end=t_end, t_first_text=t_first_text,
            completion_tokens=stats.completion_tokens,
            finish_reason=end.finish_reason.value,
            streamed_tokens=streamed,
            prompt_tokens=stats.prompt_tokens,
            question_tokens=stats.prompt_tokens
            - self.engine.count_prompt_tokens(without_question),
            image_tokens=stats.image_tokens,
            cached_tokens=stats.cached_tokens,
            image_cache_hits=stats.image_cache_hits,
            image_encode_ms=stats.image_encode_ms or None,  # None: not encoded (reused)
            engine_ttft_ms=stats.ttft_ms,
            prefill_ms=stats.prefill_ms,
            prefill_tok_s=stats.prefill_tokens_per_s or None,
            engine_decode_tok_s=stats.decode_tokens_per_s or None,
            token_times=token_times,
        )


def counters_delta(before: EngineSnapshot, after: EngineSnapshot) -> dict[str, object]:
    """Engine counters accumulated between two snapshots (the measured requests only)."""
    b, a = before.counters, after.counters
    d = {f.name: getattr(a, f.name) - getattr(b, f.name) for f in fields(EngineCounters)
         if f.name not in ("finished", "max_batch_tokens")}
    steps = d["steps"]
    return {
        "image_cache_hits": after.image_cache.hits - before.image_cache.hits,
        "image_cache_misses": after.image_cache.misses - before.image_cache.misses,
        "prefix_tokens_reused": d["prefix_tokens_reused"],
        "prompt_tokens_processed": d["prompt_tokens_processed"],
        "completion_tokens": d["completion_tokens"],
        "admitted": d["admitted"],
        "rejected": d["rejected"],
        "decode_steps": steps,
        "mean_batch_tokens": round(d["batch_tokens"] / steps, 2) if steps else None,
        "max_batch_tokens": a.max_batch_tokens,
        "finished": {k.value: v - b.finished.get(k, 0) for k, v in a.finished.items()},
        "image_cache_entries": after.image_cache.entries,
        "image_cache_bytes": after.image_cache.bytes,
        "n_slots": after.n_slots,
    }

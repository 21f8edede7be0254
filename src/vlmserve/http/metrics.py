"""Prometheus metrics, in a registry that belongs to one app.

Two sources: what the HTTP layer sees (responses by status, finished generations by
reason, token counts, time to first token, decode speed, client aborts) is counted as it
happens; what the engine knows (queue, busy slots, caches, batches) is read from
``EngineClient.snapshot()`` at scrape time by a custom collector, so the engine thread
never touches Prometheus objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmserve.engine.client import EngineSnapshot
from vlmserve.session_images import SessionImageStats
from vlmserve.types import FinishReason, RequestStats

# Paths reported by name; everything else is "other" (bounded label values).
_KNOWN_PATHS = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")


class Metrics:
    """The counters and histograms of one app, and their registry."""

    def __init__(self, snapshot: Callable[[], EngineSnapshot | None],
                 session_images: Callable[[], SessionImageStats] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_responses = Counter(
            "vlmserve_http_responses", "HTTP responses by path and status code",
            ["path", "status"], registry=r)
        self.requests = Counter(
            "vlmserve_requests", "Generations finished, by source (api, ui) and finish reason",
            ["source", "finish_reason"], registry=r)
        self.aborted = Counter(
            "vlmserve_aborted_requests",
            "Generations stopped because the client went away or cancelled", ["source"],
            registry=r)
        self.prompt_tokens = Counter(
            "vlmserve_prompt_tokens", "Prompt tokens of finished generations (images included)",
            ["source"], registry=r)
        self.cached_prompt_tokens = Counter(
            "vlmserve_cached_prompt_tokens", "Prompt tokens served from a slot's KV cache",
            ["source"], registry=r)
        self.image_tokens = Counter(
            "vlmserve_image_tokens", "Image tokens of finished generations", ["source"],
            registry=r)
        self.completion_tokens = Counter(
            "vlmserve_completion_tokens", "Tokens generated", ["source"], registry=r)
        self.dropped_turns = Counter(
            "vlmserve_sliding_window_dropped_turns",
            "Conversation turns left out to fit the context budget", registry=r)
        self.ttft = Histogram(
            "vlmserve_time_to_first_token_seconds", "Submit to first token (queue included)",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60), registry=r)
        self.decode_speed = Histogram(
            "vlmserve_decode_tokens_per_second", "Decode speed after the first token",
            buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 200, 500, 1000, 5000), registry=r)
        self.duration = Histogram(
            "vlmserve_request_duration_seconds", "Submit to last token",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120, 300), registry=r)
        r.register(EngineCollector(snapshot))
        ProcessCollector(registry=r)  # process_resident_memory_bytes ...: what a soak watches
        if session_images is not None:
            r.register(SessionImagesCollector(session_images))

    def observe_finished(self, source: str, reason: FinishReason, stats: RequestStats | None,
                         dropped_turns: int = 0) -> None:
        """One generation ended (any reason); record its figures."""
        self.requests.labels(source, reason.value).inc()
        if reason is FinishReason.ABORT:
            self.aborted.labels(source).inc()
        if dropped_turns:
            self.dropped_turns.inc(dropped_turns)
        if stats is None or reason is FinishReason.ERROR:
            return
        self.prompt_tokens.labels(source).inc(stats.prompt_tokens)
        self.cached_prompt_tokens.labels(source).inc(stats.cached_tokens)
        self.image_tokens.labels(source).inc(stats.image_tokens)
        self.completion_tokens.labels(source).inc(stats.completion_tokens)
        if stats.ttft_ms > 0:
            self.ttft.observe(stats.ttft_ms / 1000)
        if stats.decode_tokens_per_s > 0:
            self.decode_speed.observe(stats.decode_tokens_per_s)
        if stats.total_ms > 0:
            self.duration.observe(stats.total_ms / 1000)

    def observe_client_abort(self, source: str) -> None:
        """The client left before the engine reported the end (no stats to record)."""
        self.requests.labels(source, FinishReason.ABORT.value).inc()
        self.aborted.labels(source).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ResponseCounter:
    """ASGI middleware counting HTTP responses by (known) path and status code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.counter = metrics.http_responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counter.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


class EngineCollector(Collector):
    """Engine figures read at scrape time from ``EngineClient.snapshot()``."""

    def __init__(self, snapshot: Callable[[], EngineSnapshot | None],
                 session_images: Callable[[], SessionImageStats] | None = None) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: names vary with whether the model is loaded

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield GaugeMetricFamily("vlmserve_model_loaded", "1 once the model is ready",
                                value=1 if snap is not None else 0)
        if snap is None:
            return
        c, cache = snap.counters, snap.image_cache
        yield GaugeMetricFamily("vlmserve_queue_depth", "Requests waiting for a slot",
                                value=snap.queue_depth)
        yield GaugeMetricFamily("vlmserve_busy_slots", "Slots prefilling or decoding",
                                value=snap.busy_slots)
        yield GaugeMetricFamily("vlmserve_slots", "Parallel slots", value=snap.n_slots)
        yield CounterMetricFamily("vlmserve_engine_admitted", "Requests given a slot",
                                  value=c.admitted)
        yield CounterMetricFamily("vlmserve_engine_rejected",
                                  "Requests refused because the queue was full",
                                  value=c.rejected)
        finished = CounterMetricFamily("vlmserve_engine_finished",
                                       "Requests the engine finished, by reason",
                                       labels=["finish_reason"])
        for reason in FinishReason:
            finished.add_metric([reason.value], c.finished.get(reason, 0))
        yield finished
        yield CounterMetricFamily("vlmserve_engine_prompt_tokens_processed",
                                  "Prompt tokens decoded (not reused)",
                                  value=c.prompt_tokens_processed)
        yield CounterMetricFamily("vlmserve_prefix_tokens_reused",
                                  "Prompt tokens served from a slot's KV (prefix reuse)",
                                  value=c.prefix_tokens_reused)
        yield CounterMetricFamily("vlmserve_engine_completion_tokens", "Tokens sampled",
                                  value=c.completion_tokens)
        yield CounterMetricFamily("vlmserve_image_cache_hits",
                                  "Images whose embeddings came from the cache",
                                  value=cache.hits)
        yield CounterMetricFamily("vlmserve_image_cache_misses",
                                  "Images not in the RAM cache (read from disk or encoded)",
                                  value=cache.misses)
        yield CounterMetricFamily("vlmserve_image_disk_hits",
                                  "Images whose embeddings came from the disk cache tier",
                                  value=c.image_disk_hits)
        yield CounterMetricFamily("vlmserve_images_encoded", "Vision-encoder runs",
                                  value=c.images_encoded)
        yield CounterMetricFamily("vlmserve_prefix_disk_hits",
                                  "Prompt prefixes through an image whose KV came from disk",
                                  value=c.prefix_disk_hits)
        yield CounterMetricFamily("vlmserve_image_slices",
                                  "Decode calls putting image embeddings into KV",
                                  value=c.image_slices)
        if snap.disk_cache is not None:
            disk = snap.disk_cache
            yield GaugeMetricFamily("vlmserve_image_disk_cache_bytes",
                                    "Bytes of embeddings in the disk tier", value=disk.bytes)
            yield GaugeMetricFamily("vlmserve_image_disk_cache_entries",
                                    "Images in the disk tier", value=disk.entries)
            yield CounterMetricFamily("vlmserve_image_disk_cache_corrupt_removed",
                                      "Disk entries found damaged and removed (never served)",
                                      value=disk.corrupt_removed)
        yield CounterMetricFamily("vlmserve_image_cache_evictions",
                                  "Embeddings evicted from the cache", value=cache.evictions)
        yield GaugeMetricFamily("vlmserve_image_cache_bytes", "Bytes of cached embeddings",
                                value=cache.bytes)
        yield GaugeMetricFamily("vlmserve_image_cache_entries", "Cached images",
                                value=cache.entries)
        yield GaugeMetricFamily("vlmserve_image_cache_budget_bytes", "Image cache budget",
                                value=cache.budget_bytes)
        yield CounterMetricFamily("vlmserve_decode_steps", "llama_decode calls",
                                  value=c.steps)
        yield CounterMetricFamily("vlmserve_batch_tokens",
                                  "Tokens over all llama_decode calls", value=c.batch_tokens)
        yield GaugeMetricFamily("vlmserve_batch_tokens_max", "Largest batch so far",
                                value=c.max_batch_tokens)


class SessionImagesCollector(Collector):
    """The session picture store (``--session-mb``), read at scrape time."""

    def __init__(self, stats: Callable[[], SessionImageStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield GaugeMetricFamily("vlmserve_session_images",
                                "Distinct pictures held for server-side sessions", s.images)
        yield GaugeMetricFamily("vlmserve_session_image_bytes",
                                "Bytes of the pictures held for server-side sessions", s.bytes)
        yield GaugeMetricFamily("vlmserve_session_image_budget_bytes",
                                "The session picture budget (--session-mb)", s.max_bytes)
        yield CounterMetricFamily("vlmserve_session_image_evictions",
                                  "Session pictures evicted to stay within the budget",
                                  s.evictions)

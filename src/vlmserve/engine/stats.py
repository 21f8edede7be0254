"""Engine-wide counters, written by the engine thread and read (as snapshots) by others."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vlmserve.types import FinishReason


@dataclass
class EngineCounters:
    """Monotonic counters for /metrics and ``vlmserve bench`` (image-cache hits and misses
    are the cache's own: ``ImageCache.stats()``)."""

    admitted: int = 0
    rejected: int = 0  # refused at submit because the queue was full
    finished: Counter[FinishReason] = field(default_factory=Counter)
    prompt_tokens_processed: int = 0  # prompt tokens actually decoded (not reused)
    prefix_tokens_reused: int = 0  # prompt cells served from a slot's KV
    completion_tokens: int = 0
    images_encoded: int = 0  # vision-encoder runs
    image_disk_hits: int = 0  # embeddings read from the disk tier instead
    prefix_disk_hits: int = 0  # prompt prefixes (through an image) whose KV came from disk
    image_slices: int = 0  # llama_decode calls that put image embeddings into KV
    steps: int = 0  # llama_decode calls for token batches
    batch_tokens: int = 0  # tokens over all those calls
    max_batch_tokens: int = 0

    def observe_batch(self, n_tokens: int) -> None:
        self.steps += 1
        self.batch_tokens += n_tokens
        self.max_batch_tokens = max(self.max_batch_tokens, n_tokens)

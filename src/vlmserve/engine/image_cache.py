"""Vision-encoder outputs keyed by image content, LRU within a byte budget.

Like vLLM v1's encoder cache: the key is the hash of the preprocessed pixels
plus the mmproj identity (never a file path), an entry is reference-counted
while a request uses it and never evicted then, and unused entries are evicted
least-recently-used first when the budget is exceeded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass
class _Entry:
    embd: np.ndarray
    refs: int = 0


@dataclass(frozen=True)
class ImageCacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    budget_bytes: int


class ImageCache:
    """Engine-thread-only cache (no locking: one thread owns it)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = self.evictions = 0

    def acquire(self, key: str) -> np.ndarray | None:
        """Return the embeddings for ``key`` and pin them, or None (a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        entry.refs += 1
        self._entries.move_to_end(key)
        return entry.embd

    def put_acquired(self, key: str, embd: np.ndarray) -> bool:
        """Store freshly encoded embeddings, pinned for the caller. False if not stored."""
        if key in self._entries or embd.nbytes > self.budget_bytes:
            return False
        self._entries[key] = _Entry(embd, refs=1)
        self._bytes += embd.nbytes
        self._evict()
        return True

    def release(self, key: str) -> None:
        """Unpin an entry taken with ``acquire``/``put_acquired``."""
        entry = self._entries.get(key)
        if entry is not None and entry.refs > 0:
            entry.refs -= 1
            self._evict()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def _evict(self) -> None:
        if self._bytes <= self.budget_bytes:
            return
        for key in [k for k, e in self._entries.items() if e.refs == 0]:  # oldest first
            if self._bytes <= self.budget_bytes:
                break
            self._bytes -= self._entries.pop(key).embd.nbytes
            self.evictions += 1

    def stats(self) -> ImageCacheStats:
        return ImageCacheStats(self.hits, self.misses, self.evictions, len(self._entries),
                               self._bytes, self.budget_bytes)

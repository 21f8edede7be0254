"""The pixels of the pictures server-side sessions refer to: one copy each, within a budget.

A session used to keep each turn's decoded picture itself (about 3 MB for 1024x1024), so
the same picture resent by 100 sessions was held 100 times, and only the number of
sessions bounded the memory. Sessions now keep a reference (the picture's content hash)
into this store: a picture is held once however many sessions or turns show it, and the
store's bytes stay within ``max_bytes`` by evicting the least recently used picture. A
session whose picture was evicted gets ``SessionImageGoneError`` on its next turn rather
than a conversation silently missing its picture.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from vlmserve.types import PreparedImage


@dataclass(frozen=True)
class SessionImageStats:
    images: int
    bytes: int
    max_bytes: int
    evictions: int


class SessionImageStore:
    """Content hash -> ``PreparedImage``, LRU over a byte budget; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._images: OrderedDict[str, PreparedImage] = OrderedDict()  # oldest use first
        self._bytes = 0
        self._evictions = 0
        self._lock = threading.Lock()

    def put(self, image: PreparedImage) -> bool:
        """Hold ``image`` (once per content hash); ``False`` if it alone is over budget."""
        size = len(image.rgb)
        with self._lock:
            key = image.content_hash
            if key in self._images:
                self._images.move_to_end(key)
                return True
            if size > self.max_bytes:
                return False
            while self._bytes + size > self.max_bytes:
                _, old = self._images.popitem(last=False)
                self._bytes -= len(old.rgb)
                self._evictions += 1
            self._images[key] = image
            self._bytes += size
            return True

    def get(self, content_hash: str) -> PreparedImage | None:
        """The held picture (and a use of it), or ``None`` once evicted."""
        with self._lock:
            image = self._images.get(content_hash)
            if image is not None:
                self._images.move_to_end(content_hash)
            return image

    def stats(self) -> SessionImageStats:
        with self._lock:
            return SessionImageStats(len(self._images), self._bytes, self.max_bytes,
                                     self._evictions)

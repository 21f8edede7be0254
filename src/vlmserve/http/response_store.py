"""Stored Responses API objects, for ``GET`` / ``DELETE /v1/responses/{id}``.

The conversation behind a stored response lives in the app's ``SessionStore`` (that is
what ``previous_response_id`` continues); this keeps the response object itself, so a
client can fetch it again. Same lifetime rules as sessions: ``ttl_s`` after the last use,
the least recently used dropped at ``max_items``. Used only from the event loop's thread.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ResponseStore:
    """Response objects by id, expiring (see the module doc)."""

    def __init__(self, ttl_s: float = 3600, max_items: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = float(ttl_s)
        self._max_items = max(1, int(max_items))
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def put(self, response: dict[str, Any]) -> None:
        self._purge()
        self._items[response["id"]] = (self._clock(), copy.deepcopy(response))
        self._items.move_to_end(response["id"])
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> dict[str, Any] | None:
        self._purge()
        entry = self._items.get(response_id)
        if entry is None:
            return None
        self._items[response_id] = (self._clock(), entry[1])
        self._items.move_to_end(response_id)
        return copy.deepcopy(entry[1])

    def delete(self, response_id: str) -> bool:
        self._purge()
        return self._items.pop(response_id, None) is not None

    def _purge(self) -> None:
        now = self._clock()
        while self._items:
            oldest_id, (used, _) = next(iter(self._items.items()))
            if now - used < self._ttl_s:
                break
            del self._items[oldest_id]

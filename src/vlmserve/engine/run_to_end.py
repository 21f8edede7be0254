"""Run one request to its end from a plain thread: the text, how it ended, its stats.

The CLI, batch work and the in-process benchmark all want the same thing from
``EngineClient.generate_sync``: every delta seen (to print, to time), the text
joined, and the final delta read the same way (an ``ERROR`` end always carries a
``VlmserveError``). Each caller then decides what an error means for it: describe raises,
batch writes it into the image's line, the benchmark stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from vlmserve.engine.client import EngineClient
from vlmserve.errors import EngineError, VlmserveError
from vlmserve.types import FinishReason, Request, RequestStats, TokenDelta

GENERIC_ENGINE_ERROR = "the engine failed the request"


@dataclass(frozen=True)
class Finished:
    """A request's end. ``error`` is None unless the engine failed it."""

    text: str
    finish_reason: FinishReason
    stats: RequestStats
    error: VlmserveError | None


def run_to_end(engine: EngineClient, request: Request,
               on_delta: Callable[[TokenDelta], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> Finished | None:
    """Submit ``request`` and drain it; ``on_delta`` sees every delta, the last included.

    Returns None when ``should_stop()`` turned true between deltas (leaving the
    stream aborts the request) or when the stream ended without a final delta.
    ``QueueFullError`` is raised at submit, as ``generate_sync`` does.
    """
    parts: list[str] = []
    with contextlib.closing(engine.generate_sync(request)) as deltas:
        for delta in deltas:
            parts.append(delta.text)
            if on_delta is not None:
                on_delta(delta)
            if delta.finished:
                error = delta.error
                if delta.finish_reason is FinishReason.ERROR and not error:
                    error = EngineError(GENERIC_ENGINE_ERROR)
                return Finished("".join(parts), delta.finish_reason, delta.stats, error)
            if should_stop is not None and should_stop():
                return None
    return None

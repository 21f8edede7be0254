"""What the page's answer bubble says before the first word: the engine's phase and the time.

On a CPU the vision encoder alone takes seconds to tens of seconds for a new picture; a
bare ellipsis all that time reads as a hang. The engine reports each phase change
(``TokenDelta.phase``); the handler shows it with the seconds since the question was
sent, refreshed while nothing new arrives (``ticking``), and drops it with the first word.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from vlmserve.types import Phase, PhaseReport

T = TypeVar("T")

PREPARING = "preparing the picture"  # before the engine has said anything


def phase_label(report: PhaseReport | None) -> str:
    if report is None:
        return PREPARING
    if report.phase is Phase.QUEUED:
        ahead = report.position - 1
        return ("waiting for a free slot (next in line)" if ahead <= 0 else
                f"waiting for a free slot ({ahead} ahead)")
    if report.phase is Phase.ENCODING:
        return "encoding the picture"
    return "reading the prompt"


def phase_html(report: PhaseReport | None, elapsed_s: float) -> str:
    """The bubble's content while waiting: ``encoding the picture… 3.2 s``."""
    return f'<span class="vlm-phase">{phase_label(report)}… {elapsed_s:.1f} s</span>'


async def ticking(items: AsyncIterator[T], every_s: float) -> AsyncIterator[T | None]:
    """``items``, with a ``None`` whenever ``every_s`` pass without one (to refresh a clock).

    The pending ``anext`` runs as a task that a tick leaves running: cancelling it would
    close the engine's stream (and abort the request) instead of merely waiting longer.
    """
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)

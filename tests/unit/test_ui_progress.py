"""The page's waiting line: phase labels and the clock that refreshes it (``ticking``)."""

from __future__ import annotations

import asyncio

from vlmserve.http.ui_progress import phase_html, phase_label, ticking
from vlmserve.types import Phase, PhaseReport


def test_labels_say_what_is_happening() -> None:
    assert phase_label(None) == "preparing the picture"
    assert phase_label(PhaseReport(Phase.QUEUED, 1)) == "waiting for a free slot (next in line)"
    assert phase_label(PhaseReport(Phase.QUEUED, 3)) == "waiting for a free slot (2 ahead)"
    assert phase_label(PhaseReport(Phase.ENCODING)) == "encoding the picture"
    assert phase_label(PhaseReport(Phase.PREFILL)) == "reading the prompt"
    assert phase_html(PhaseReport(Phase.ENCODING), 3.21) == (
        '<span class="vlm-phase">encoding the picture… 3.2 s</span>')


def test_ticking_fills_silences_with_ticks_and_never_cancels_the_stream() -> None:
    closed: list[str] = []

    async def slow() -> object:
        try:
            yield "a"
            await asyncio.sleep(0.35)  # a long encode: several ticks pass
            yield "b"
        except asyncio.CancelledError:
            closed.append("cancelled")  # would abort the engine request
            raise

    async def run() -> list:
        return [item async for item in ticking(slow(), 0.1)]

    out = asyncio.run(run())
    assert out[0] == "a" and out[-1] == "b"
    assert out[1:-1] and all(item is None for item in out[1:-1])
    assert 2 <= len(out) - 2 <= 4
    assert closed == []


def test_leaving_early_closes_the_stream() -> None:
    closed: list[str] = []

    async def endless() -> object:
        try:
            while True:
                await asyncio.sleep(1)
                yield "x"
        finally:
            closed.append("closed")

    async def run() -> None:
        async for item in ticking(endless(), 0.05):
            assert item is None
            break

    asyncio.run(run())
    assert closed == ["closed"]

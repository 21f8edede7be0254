"""Medians and ranges of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def summarize(values: Iterable[float | int | None], digits: int = 2) -> dict[str, object] | None:
    """``{"median", "min", "max", "n", "values"}`` over the non-None values; None when empty."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {
        "median": round(statistics.median(vals), digits),
        "min": round(min(vals), digits),
        "max": round(max(vals), digits),
        "n": len(vals),
        "values": [round(v, digits) for v in vals],
    }


def median(summary: dict[str, object] | None) -> float | None:
    return None if summary is None else summary["median"]  # type: ignore[return-value]


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b, None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)

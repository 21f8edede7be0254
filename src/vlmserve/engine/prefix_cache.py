"""KV prefix reuse: which slot's cached sequence shares the longest prefix with a prompt.

A prompt is a flat list of *units*: an ``int`` per text token, an ``ImageUnit``
per image (matched as a whole by its content key). Positions follow Qwen3-VL's
M-RoPE rule: a token advances the position by 1, an image by its ``n_pos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageUnit:
    key: str
    n_tokens: int  # KV cells
    n_pos: int  # positions advanced


Unit = int | ImageUnit


def unit_pos(unit: Unit) -> int:
    return unit.n_pos if isinstance(unit, ImageUnit) else 1


def unit_cells(unit: Unit) -> int:
    return unit.n_tokens if isinstance(unit, ImageUnit) else 1


def common_prefix(cached: Sequence[Unit], prompt: Sequence[Unit]) -> int:
    """Number of leading units ``cached`` and ``prompt`` share.

    Never the whole prompt: at least its last unit must be decoded again to
    get logits for the first new token (and an image is never split).
    """
    limit = min(len(cached), len(prompt) - 1)
    n = 0
    while n < limit and cached[n] == prompt[n]:
        n += 1
    return n


def position_after(units: Sequence[Unit], n: int) -> int:
    """The position following the first ``n`` units."""
    return sum(unit_pos(u) for u in units[:n])


def cells_in(units: Sequence[Unit], n: int | None = None) -> int:
    return sum(unit_cells(u) for u in (units if n is None else units[:n]))


@dataclass(frozen=True)
class SlotChoice:
    slot_index: int
    reused_units: int


def choose_slot(free: Sequence[tuple[int, Sequence[Unit], int]], prompt: Sequence[Unit]
                ) -> SlotChoice:
    """Pick among free slots ``(index, cached_units, last_used_tick)``.

    Longest shared prefix wins (like llama.cpp's server slot selection);
    ties go to the least recently used slot, so a slot holding a valuable
    prefix is not overwritten when an empty one would do.
    """
    if not free:
        raise ValueError("no free slot")
    best = max(free, key=lambda f: (common_prefix(f[1], prompt), -f[2]))
    return SlotChoice(best[0], common_prefix(best[1], prompt))

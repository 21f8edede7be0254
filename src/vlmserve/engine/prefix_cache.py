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

    A slot is worth continuing when the prompt reuses at least half of the KV cells it
    holds (an empty slot always is). Among those the longest shared prefix wins; ties go
    to the least recently used. When none is, the least recently used slot is taken.
    Without the half rule, a new conversation sharing only the first few template
    tokens with a slot would take it and destroy another conversation's KV while an
    empty slot was free: with several sessions on one engine (what a cache-affine
    router sends it) every next turn would find its prefix overwritten.
    """
    if not free:
        raise ValueError("no free slot")
    shared = {f[0]: common_prefix(f[1], prompt) for f in free}
    worth = [f for f in free if 2 * cells_in(f[1], shared[f[0]]) >= cells_in(f[1])]
    if worth:
        best = max(worth, key=lambda f: (shared[f[0]], -f[2]))
    else:
        best = min(free, key=lambda f: f[2])
    return SlotChoice(best[0], shared[best[0]])

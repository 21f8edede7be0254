"""Plans one engine step: who decodes, who prefills how much text, which image slices go in.

Pure Python over plain numbers, so fairness and budgets are unit-tested without
a model. Policy (as llama.cpp's server and vLLM's chunked prefill, plus vLLM's
encoder scheduling):
  1. every generating slot gets its next token every step, however many there are
     (the loop splits them into llama_decode calls of at most ``budget`` tokens);
  2. text prefill gets what is left of the budget, and never less than
     ``prefill_floor(budget)``, so prompts make progress even when decode alone
     fills the budget; shared in rotating order, so one long prompt cannot
     monopolise steps. While anyone decodes, text prefill and image cells
     together stay within ``image_budget``: a prompt's text costs the step as
     much as an image's cells do, and the step's length is the streams' gap;
  3. images whose embeddings are ready go into KV in slices: at most
     ``image_budget`` cells per step over all slots, oldest request first (one
     newcomer's picture is finished before the next one's starts, so the first
     of them answers soonest; round-robin would delay them all). Images whose
     encoder output is not back yet are skipped: their slot waits, nobody else
     does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PrefillNeed:
    """What a prefilling slot wants next."""

    slot: int
    text_run: int = 0  # text tokens until the next image or the prompt's end (0: image next)
    image_cells: int = 0  # cells of the next image not yet in KV (0: text next)
    image_ready: bool = False  # that image's embeddings are here
    arrival: float = 0.0  # when the request came (older images go in first)


@dataclass(frozen=True)
class StepPlan:
    decode: tuple[int, ...] = ()  # slots that decode their pending token
    prefill: tuple[tuple[int, int], ...] = ()  # (slot, n prompt tokens this step)
    images: tuple[tuple[int, int], ...] = ()  # (slot, n image cells this step)
    next_rotation: int = 0

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill and not self.images


def prefill_floor(budget: int) -> int:
    """Text-prefill tokens a step carries even when decoding takes the whole budget."""
    return max(1, budget // 8)


def plan_step(decoding: Sequence[int], prefilling: Sequence[PrefillNeed], budget: int,
              image_budget: int, rotation: int = 0) -> StepPlan:
    """Return the work for one step: tokens for ``budget``-sized decodes, image cells
    for one embedding decode of at most ``image_budget`` cells."""
    decode = tuple(sorted(decoding))
    order = _rotate(sorted(prefilling, key=lambda p: p.slot), rotation)
    text_left = max(budget - len(decode), prefill_floor(budget))
    if decode:
        text_left = min(text_left, max(image_budget, prefill_floor(budget)))
    prefill: list[tuple[int, int]] = []
    for need in order:
        if need.image_cells == 0 and need.text_run > 0 and text_left > 0:
            n = min(need.text_run, text_left)
            prefill.append((need.slot, n))
            text_left -= n
    image_left = image_budget - sum(n for _, n in prefill) if decode else image_budget
    images: list[tuple[int, int]] = []
    for need in sorted(prefilling, key=lambda p: (p.arrival, p.slot)):
        if need.image_cells > 0 and need.image_ready and image_left > 0:
            n = min(need.image_cells, image_left)
            images.append((need.slot, n))
            image_left -= n
    return StepPlan(decode, tuple(prefill), tuple(images), rotation + 1)


def _rotate(items: list[PrefillNeed], k: int) -> list[PrefillNeed]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]

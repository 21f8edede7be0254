"""Plans one engine step: who decodes, who prefills how much, which image goes in.

Pure Python over plain numbers, so fairness and budgets are unit-tested without
a model. Policy (as llama.cpp's server and vLLM's chunked prefill):
  1. every generating slot gets its next token (decode never starves);
  2. the rest of the per-step token budget goes to slots still reading their
     prompt, in rotating order, so one long prompt cannot monopolise steps;
  3. at most one image is put into KV per step (its own decode call), also in
     rotating order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PrefillNeed:
    """What a prefilling slot wants next."""

    slot: int
    next_is_image: bool
    text_run: int  # tokens until the next image or the prompt's end (0 if image next)


@dataclass(frozen=True)
class StepPlan:
    decode: tuple[int, ...] = ()  # slots that decode their pending token
    prefill: tuple[tuple[int, int], ...] = ()  # (slot, n prompt tokens this step)
    image_slot: int | None = None  # slot whose next image is processed this step
    next_rotation: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.decode) + sum(n for _, n in self.prefill)

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill and self.image_slot is None


@dataclass
class _Budget:
    left: int
    taken: list[tuple[int, int]] = field(default_factory=list)


def plan_step(decoding: Sequence[int], prefilling: Sequence[PrefillNeed], budget: int,
              rotation: int = 0) -> StepPlan:
    """Return the work for one step within ``budget`` tokens of one llama_decode."""
    decode = tuple(decoding[:budget])
    b = _Budget(budget - len(decode))
    order = _rotate(sorted(prefilling, key=lambda p: p.slot), rotation)
    image_slot = next((p.slot for p in order if p.next_is_image), None)
    for need in order:
        if b.left <= 0:
            break
        if need.next_is_image or need.text_run <= 0:
            continue
        n = min(need.text_run, b.left)
        b.taken.append((need.slot, n))
        b.left -= n
    return StepPlan(decode, tuple(b.taken), image_slot, rotation + 1)


def _rotate(items: list[PrefillNeed], k: int) -> list[PrefillNeed]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]

"""Slot and job state: one slot = one llama.cpp sequence id; one job = one admitted request."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vlmserve.engine.detokenize import IncrementalDetokenizer
from vlmserve.engine.llamacpp.backend import ImageChunk
from vlmserve.engine.llamacpp.sampler import Sampler
from vlmserve.engine.prefix_cache import ImageUnit, Unit, cells_in
from vlmserve.types import Request, TokenDelta


class SlotState(enum.Enum):
    IDLE = "idle"  # free; its KV may still hold a reusable prefix
    PREFILL = "prefill"  # reading the prompt into KV
    DECODE = "decode"  # generating


@dataclass
class Job:
    """An admitted request and everything the loop tracks for it."""

    request: Request
    emit: Callable[[TokenDelta], None]
    t_submit: float
    units: list[Unit] = field(default_factory=list)  # the whole prompt
    images: dict[int, ImageChunk] = field(default_factory=dict)  # unit index -> chunk
    cursor: int = 0  # next prompt unit to put into KV
    n_past: int = 0  # next position
    sampler: Sampler | None = None
    detok: IncrementalDetokenizer | None = None
    pending_token: int | None = None  # sampled, not yet decoded
    pending_ids: list[int] = field(default_factory=list)  # ids not yet sent in a delta
    n_completion: int = 0
    pinned: list[str] = field(default_factory=list)  # image-cache keys held
    cached_tokens: int = 0
    image_encode_ms: float = 0.0
    image_cache_hits: int = 0
    t_admit: float = 0.0
    t_first: float = 0.0
    t_prompt_done: float = 0.0

    @property
    def prompt_done(self) -> bool:
        return self.cursor >= len(self.units)

    @property
    def prompt_cells(self) -> int:
        return cells_in(self.units)

    @property
    def image_cells(self) -> int:
        return sum(u.n_tokens for u in self.units if isinstance(u, ImageUnit))

    def text_run(self) -> int:
        """Prompt tokens from the cursor to the next image or the end."""
        n = 0
        for u in self.units[self.cursor:]:
            if isinstance(u, ImageUnit):
                break
            n += 1
        return n

    def free(self) -> None:
        if self.sampler is not None:
            self.sampler.free()
            self.sampler = None
        for chunk in self.images.values():
            chunk.free()
        self.images.clear()


@dataclass
class Slot:
    """One sequence in the llama context and what its KV holds.

    ``cached`` lists the units whose KV is valid, in order; change it only
    through ``keep``/``add`` so the cell count (read on every generated token)
    stays O(1).
    """

    index: int  # == llama seq_id
    state: SlotState = SlotState.IDLE
    cached: list[Unit] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    job: Job | None = None
    cells: int = 0  # KV cells held == cells_in(cached)

    def keep(self, n_units: int) -> None:
        """Keep only the first ``n_units`` cached units (0: forget everything)."""
        self.cells -= cells_in(self.cached[n_units:])
        del self.cached[n_units:]

    def add(self, units: list[Unit]) -> None:
        self.cached.extend(units)
        self.cells += cells_in(units)

"""Slot and job state: one slot = one llama.cpp sequence id; one job = one admitted request."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vlmserve.engine.backend import ImageChunk, SamplerHandle
from vlmserve.engine.detokenize import IncrementalDetokenizer
from vlmserve.engine.prefix_cache import ImageUnit, Unit, cells_in
from vlmserve.types import Request, TokenDelta, TokenLogprob


class SlotState(enum.Enum):
    IDLE = "idle"  # free; its KV may still hold a reusable prefix
    PREFILL = "prefill"  # reading the prompt into KV (waits while its next image is encoded)
    DECODE = "decode"  # generating


@dataclass
class Job:
    """An admitted request and everything the loop tracks for it."""

    request: Request
    emit: Callable[[TokenDelta], None]
    t_submit: float
    units: list[Unit] = field(default_factory=list)  # the whole prompt
    images: dict[int, ImageChunk] = field(default_factory=dict)  # unit index -> chunk
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)  # unit index -> ready
    encoding: set[int] = field(default_factory=set)  # unit indices at the vision stage
    cursor: int = 0  # next prompt unit to put into KV
    n_past: int = 0  # next position
    image_done: int = 0  # cells of the image at ``cursor`` already in KV (sliced prefill)
    image_pos: np.ndarray | None = None  # that image's decoder positions, once started
    sampler: SamplerHandle | None = None
    detok: IncrementalDetokenizer | None = None
    pending_token: int | None = None  # sampled, not yet decoded
    pending_ids: list[int] = field(default_factory=list)  # ids not yet sent in a delta
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)  # theirs, if asked
    n_completion: int = 0
    pinned: list[str] = field(default_factory=list)  # image-cache keys held
    cached_tokens: int = 0
    image_encode_ms: float = 0.0
    image_cache_hits: int = 0
    image_disk_hits: int = 0
    t_admit: float = 0.0
    t_first: float = 0.0
    t_prompt_done: float = 0.0
    phase: tuple | None = None  # (Phase, position) last reported, for report_phases requests

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

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def free(self) -> dict[int, ImageChunk]:
        """Free the sampler and the image chunks; return the chunks the vision stage still
        holds (unit index -> chunk), which must be freed only when they come back."""
        if self.sampler is not None:
            self.sampler.free()
            self.sampler = None
        lent = {i: c for i, c in self.images.items() if i in self.encoding}
        for i, chunk in self.images.items():
            if i not in lent:
                chunk.free()
        self.images.clear()
        self.embeddings.clear()
        self.image_pos = None
        return lent


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

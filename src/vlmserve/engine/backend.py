"""What the engine needs from a model backend: two protocols and the plain values they trade.

The engine loop, the vision stage, the scheduler and the caches are written against
these protocols, never against llama.cpp, so the loop's logic is tested with a fake
backend (tests/unit/fake_backend.py) and the real one lives in ``engine/llamacpp/``.

Thread rules (the real backend relies on them):
  * ``DecodeBackend`` methods run on the engine thread only;
  * ``VisionBackend.tokenize_prompt`` runs on the vision stage's prepare thread
    (llama.cpp documents ``mtmd_tokenize`` as thread-safe on a shared context);
  * ``VisionBackend.encode_images`` runs on the vision stage's encoder thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vlmserve.types import Prompt, SamplingParams


@dataclass(frozen=True)
class BackendInfo:
    """Facts about the loaded model that the layers above need."""

    model_path: Path
    mmproj_path: Path | None
    model_name: str
    n_ctx_per_slot: int
    n_parallel: int
    n_batch: int
    threads: int
    chat_template: str | None
    model_size_bytes: int
    n_params: int
    mmproj_id: str  # identity of the vision encoder, part of image-cache keys
    vision: bool
    gpu_offload: bool
    system_info: str
    threads_vision: int = 0


@dataclass(frozen=True)
class TextChunk:
    """Prompt tokens decoded one per KV cell, one position each."""

    tokens: tuple[int, ...]


class ImageChunk(Protocol):
    """One image of a tokenized prompt: ``n_tokens`` KV cells that advance the position
    by ``n_pos`` (with Qwen3-VL's M-RoPE, max(grid_w, grid_h), not ``n_tokens``)."""

    key: str  # content hash + mmproj identity: the image-cache key
    n_tokens: int
    n_pos: int

    def positions(self, n_past: int) -> np.ndarray:
        """Decoder positions of every image token when the image starts at ``n_past``:
        int32 ``(n_tokens, n_pos_per_embd)`` (4 sections for M-RoPE, else 1)."""
        ...

    def free(self) -> None: ...


PromptChunk = TextChunk | ImageChunk


@dataclass
class BatchToken:
    """One token of a ``decode`` call."""

    seq_id: int
    token: int
    pos: int
    logits: bool


@dataclass(frozen=True)
class EmbdSlice:
    """Consecutive image embeddings for one sequence: rows ``embd`` (float32, one per KV
    cell) at ``pos`` (``ImageChunk.positions`` rows for the same cells)."""

    seq_id: int
    embd: np.ndarray
    pos: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.embd)


class SamplerHandle(Protocol):
    def free(self) -> None: ...


class DecodeBackend(Protocol):
    """The engine thread's view: put tokens and embeddings into KV, sample, cut KV."""

    info: BackendInfo

    def decode(self, tokens: Sequence[BatchToken]) -> None:
        """One forward pass over tokens of several sequences (at most ``n_batch``)."""
        ...

    def decode_embeddings(self, slices: Sequence[EmbdSlice]) -> None:
        """One forward pass over image embeddings of one or more sequences (no logits)."""
        ...

    def new_sampler(self, params: SamplingParams) -> SamplerHandle: ...

    def sample(self, sampler: SamplerHandle, batch_index: int) -> int:
        """Pick (and accept) a token from the logits at ``batch_index`` of the last ``decode``."""
        ...

    def logprobs(self, batch_index: int, token: int, n_top: int,
                 ) -> tuple[float, tuple[tuple[int, float], ...]]:
        """``token``'s log-probability at ``batch_index`` of the last ``decode`` and the
        ``n_top`` likeliest (id, logprob); called only for requests that ask."""
        ...

    def is_eog(self, token: int) -> bool: ...

    def token_bytes(self, token: int) -> bytes: ...

    def seq_truncate(self, seq_id: int, pos: int) -> bool:
        """Drop ``seq_id``'s cells at positions >= ``pos``; False if the whole sequence had to go."""
        ...

    def seq_state(self, seq_id: int) -> np.ndarray:
        """A copy of ``seq_id``'s KV (cells, positions, keys and values) as raw bytes."""
        ...

    def set_seq_state(self, seq_id: int, state: np.ndarray) -> bool:
        """Replace ``seq_id``'s KV with ``state`` (from ``seq_state``); False if refused."""
        ...


class VisionBackend(Protocol):
    """The vision stage's view: split prompts into chunks, run the vision encoder."""

    def tokenize_prompt(self, prompt: Prompt) -> list[PromptChunk]: ...

    def encode_images(self, chunks: Sequence[ImageChunk]) -> list[np.ndarray]:
        """Embeddings (float32, ``(n_tokens, n_embd_inp)``) for each chunk, in order."""
        ...

"""Configuration objects: frozen, validated on construction, no I/O.

The CLI and ``start.sh`` fill these from flags and ``VLMSERVE_*`` environment
variables (see ``vlmserve.settings``); everything below them only reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vlmserve.errors import VlmserveError

# Qwen3-VL-Instruct's recommended sampling (its model card): temperature 0.7, top_p 0.8,
# top_k 20 (SamplingParams' defaults) and presence_penalty 1.5.
QWEN_PRESENCE_PENALTY = 1.5


def default_penalty(temperature: float, server_default: float) -> float:
    """A penalty a request does not give: the server's (presence: Qwen's 1.5) when it
    samples; none for greedy requests, which stay plain argmax unless they ask."""
    return server_default if temperature > 0.0 else 0.0


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise VlmserveError(message)


def default_thread_count(vision: bool = False) -> int:
    """Threads for the text model when none are asked for.

    Decode is memory-bound: beyond about half of a big machine's logical CPUs
    (hyper-threads) more threads only add contention. On a small machine the text
    model takes every core but one when a vision encoder runs beside it: ggml's
    threads spin-wait for each other, so a text thread sharing its core with the
    encoder stalls the whole pass (measured: 20 tokens, 11 ms -> 9 s on 2 cores).
    """
    cpus = os.cpu_count() or 1
    if cpus > 4:
        return cpus // 2
    return max(1, cpus - 1) if vision else cpus


def default_vision_thread_count(text_threads: int) -> int:
    """Threads for the vision encoder (its own worker, beside the text model's threads).

    The encoder is compute-bound and runs while other streams decode: on a small machine
    it gets the core(s) the text model leaves, on a big one as many as the text model.
    """
    cpus = os.cpu_count() or 1
    return max(1, min(text_threads, cpus - text_threads)) if cpus > text_threads else 1


QWEN_MIN_TOKENS = 64  # Qwen3-VL's processor: shortest_edge 65536 px = 64 tokens
QWEN_MAX_TOKENS = 16384  # longest_edge 16777216 px; also mtmd's cap here (never reached)
# A budget's cap. smart_resize can round up to ~1.2x its floor (never 2x within aspect
# ratio 200), so every image stays inside mtmd's bounds and mtmd never resizes it.
BUDGET_MAX_TOKENS = 8192


@dataclass(frozen=True)
class TokenBudget:
    """Vision tokens per image, ``min_tokens`` to ``max_tokens`` (both included)."""

    min_tokens: int = QWEN_MIN_TOKENS
    max_tokens: int = 1024

    def __post_init__(self) -> None:
        for name in ("min_tokens", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise VlmserveError(f"{name} must be an integer, got {value!r}")
        # 8 is mtmd's floor; below 64 as a cap the rule's floor step can undershoot it.
        if not 8 <= self.min_tokens <= BUDGET_MAX_TOKENS:
            raise VlmserveError(f"image min tokens must be in [8, {BUDGET_MAX_TOKENS}], "
                                f"got {self.min_tokens}")
        if not QWEN_MIN_TOKENS <= self.max_tokens <= BUDGET_MAX_TOKENS:
            raise VlmserveError(f"image max tokens must be in [{QWEN_MIN_TOKENS}, "
                                f"{BUDGET_MAX_TOKENS}], got {self.max_tokens}")
        if self.min_tokens > self.max_tokens:
            raise VlmserveError(f"image min tokens ({self.min_tokens}) exceed max tokens "
                                f"({self.max_tokens})")

    def pixel_bounds(self, factor: int) -> tuple[int, int]:
        """``(min_pixels, max_pixels)`` for ``smart_resize``."""
        return self.min_tokens * factor * factor, self.max_tokens * factor * factor


@dataclass(frozen=True)
class ImageOptions:
    """Limits and geometry for the image pipeline (``vlmserve.images``)."""

    max_edge: int = 1024  # longest edge after resizing, in pixels
    upscale: bool = False  # also enlarge images smaller than max_edge
    max_bytes: int = 20 * 1024 * 1024  # upload size limit
    max_pixels: int = 64_000_000  # decoded pixel limit (decompression bombs)
    max_frames: int = 1000  # animated GIF / multi-page TIFF frame limit
    # Vision tokens per image: the picture is resized with Qwen's smart_resize into these
    # bounds (vlmserve.images.smart_resize); a request may narrow them, never widen them.
    tokens: TokenBudget = TokenBudget()

    def __post_init__(self) -> None:
        _require(32 <= self.max_edge <= 8192, f"max_edge must be in [32, 8192], got {self.max_edge}")
        _require(self.max_bytes > 0, "max_bytes must be > 0")
        _require(self.max_pixels > 0, "max_pixels must be > 0")
        _require(self.max_frames > 0, "max_frames must be > 0")


@dataclass(frozen=True)
class EngineConfig:
    """What the engine thread needs to load a model and serve requests."""

    model_path: Path
    mmproj_path: Path | None = None
    n_ctx_per_slot: int = 8192  # KV cells available to each slot
    n_parallel: int = 4  # slots = concurrent sequences in one llama context
    n_threads: int = 0  # 0: default_thread_count()
    n_threads_vision: int = 0  # 0: default_vision_thread_count(threads)
    n_batch: int = 512  # max tokens in one llama_decode (per-step token budget)
    n_gpu_layers: int = -1  # -1: all layers that the build can offload
    image_cache_mb: int = 512
    image_cache_dir: Path | None = None  # disk tier of the image-embedding cache (None: off)
    image_cache_disk_mb: int = 4096  # byte budget of the disk tier
    image_slice: int = 64  # most image KV cells put in per engine step (decode keeps going)
    # mtmd's own bounds. vlmserve resizes every image with Qwen's rule into the request's
    # budget first (ImageOptions.tokens); mtmd's bounds are set wide (8 .. 16384) so that
    # it never resizes again (its floor rounds differently and its default cap is 4096).
    image_min_tokens: int = 8
    image_max_tokens: int = QWEN_MAX_TOKENS
    max_queue: int = 64  # requests waiting for a slot before 503
    use_mmap: bool = True
    seed: int = 0  # default seed for requests that give none and sample
    prefix_cache: bool = True
    check_memory: bool = True  # refuse to load what would not fit (see engine.preflight)
    # Flash attention for the text model: "auto" = on with GPU offload, off on CPU, where
    # llama.cpp's CPU flash-attention kernel decoded ~25 % slower in our bench (BENCHMARKS.md).
    flash_attn: str = "auto"

    def __post_init__(self) -> None:
        _require(self.n_ctx_per_slot >= 256, "context per slot must be >= 256 tokens")
        _require(1 <= self.n_parallel <= 64, "parallel slots must be in [1, 64]")
        _require(self.n_threads >= 0, "threads must be >= 0")
        _require(self.n_batch >= 32, "n_batch must be >= 32")
        _require(self.n_threads_vision >= 0, "vision threads must be >= 0")
        _require(self.image_cache_mb >= 0, "image cache size must be >= 0 MB")
        _require(self.image_cache_disk_mb >= 0, "disk image cache size must be >= 0 MB")
        _require(self.image_slice >= 1, "image slice must be >= 1 cell")
        _require(self.max_queue >= 1, "max_queue must be >= 1")
        _require(self.image_min_tokens >= 0 and self.image_max_tokens >= 0,
                 "image token bounds must be >= 0")
        _require(self.flash_attn in ("auto", "on", "off"), "flash_attn must be auto, on or off")

    def use_flash_attn(self, gpu_offload: bool) -> bool:
        """Whether the text model's context uses flash attention on this build."""
        if self.flash_attn == "auto":
            return gpu_offload and self.n_gpu_layers != 0
        return self.flash_attn == "on"

    @property
    def threads(self) -> int:
        return self.n_threads or default_thread_count(vision=self.mmproj_path is not None)

    @property
    def threads_vision(self) -> int:
        return self.n_threads_vision or default_vision_thread_count(self.threads)

    @property
    def n_ctx_total(self) -> int:
        return self.n_ctx_per_slot * self.n_parallel

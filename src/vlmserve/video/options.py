"""Limits and sampling defaults for video clips: frozen, validated, no I/O.

The defaults follow Qwen3-VL's video processor where it has one (2 frames a second, at
least 4 frames, sides multiples of 32 px, a pixel floor of 128 x 32 x 32 over the whole
clip); the frame and token caps are vlmserve's, sized for a CPU box: a clip's vision
tokens are KV cells like any image's (about 147 kB each on Qwen3-VL-8B in F16).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmserve.errors import RequestError

QWEN_FPS = 2.0  # Qwen3-VL's video processor samples 2 frames a second
QWEN_MIN_FRAMES = 4  # ... and never fewer than 4 (when the clip has them)
QWEN_MIN_PIXELS = 128 * 32 * 32  # its floor on frames x height x width
MAX_FPS = 30.0


@dataclass(frozen=True)
class VideoOptions:
    """How clips are sampled and what they may cost.

    ``max_tokens`` caps the vision tokens of a whole clip (every frame pair is one image
    chunk of ``(h/32) * (w/32)`` tokens): the frames are made smaller, never dropped, to
    fit it. ``max_frames`` caps the frames sampled (before an odd count is padded).
    """

    fps: float = QWEN_FPS
    min_frames: int = QWEN_MIN_FRAMES
    max_frames: int = 64
    max_tokens: int = 2048
    max_bytes: int = 100 * 1024 * 1024
    max_seconds: float = 600.0
    max_frame_pixels: int = 4096 * 4096  # a single decoded frame's size

    def __post_init__(self) -> None:
        check_fps(self.fps)
        if not 1 <= self.min_frames <= self.max_frames:
            raise RequestError(f"video frames must satisfy 1 <= min_frames <= max_frames, got "
                               f"{self.min_frames} and {self.max_frames}")
        if self.max_tokens < 16:
            raise RequestError(f"the video token budget must be >= 16, got {self.max_tokens}")
        for name in ("max_bytes", "max_seconds", "max_frame_pixels"):
            if getattr(self, name) <= 0:
                raise RequestError(f"video {name} must be > 0")

    def sampling(self, fps: float | None = None, max_frames: int | None = None) -> Sampling:
        """This server's sampling narrowed by a request's ``fps`` / ``max_frames``: a request
        may sample slower or faster, and fewer frames, never more than ``max_frames``."""
        if fps is not None:
            check_fps(fps)
        if max_frames is not None and not 1 <= max_frames <= self.max_frames:
            raise RequestError(f"max_frames must be in [1, {self.max_frames}], got {max_frames}")
        cap = max_frames or self.max_frames
        return Sampling(fps=fps or self.fps, min_frames=min(self.min_frames, cap),
                        max_frames=cap, max_tokens=self.max_tokens)


@dataclass(frozen=True)
class Sampling:
    """What one clip is sampled with (part of its identity: its timestamps depend on it)."""

    fps: float
    min_frames: int
    max_frames: int
    max_tokens: int


def check_fps(fps: float) -> None:
    if not isinstance(fps, int | float) or isinstance(fps, bool) or not 0 < fps <= MAX_FPS:
        raise RequestError(f"fps must be in (0, {MAX_FPS:g}], got {fps!r}")

"""Which frames of a clip the model sees, and the time Qwen3-VL is told for each pair.

Pure arithmetic, following Qwen3-VL's video processor (transformers,
``Qwen3VLVideoProcessor.sample_frames`` and ``Qwen3VLProcessor._calculate_timestamps``):
``n = int(total / source_fps * fps)`` frames, clamped to ``[min_frames, max_frames]`` and
to the clip's own count, spread evenly over the clip (``linspace(0, total - 1, n)``,
rounded); an odd list is padded with its last index; a pair's time is the mean of its two
frames' times (``index / source_fps``), written ``<t.t seconds>``.
"""

from __future__ import annotations

import numpy as np

TEMPORAL_PATCH = 2  # Qwen3-VL's Conv3d sees two frames at a time
DEFAULT_SOURCE_FPS = 24.0  # what Qwen's processor assumes when a file does not say


def sample_indices(total_frames: int, source_fps: float, fps: float, min_frames: int,
                   max_frames: int) -> list[int]:
    """Indices (into the decoded frames) of the frames to keep, in order."""
    if total_frames < 1:
        return []
    source_fps = source_fps if source_fps and source_fps > 0 else DEFAULT_SOURCE_FPS
    n = int(total_frames / source_fps * fps)
    n = min(max(n, min_frames), max_frames, total_frames)
    return [int(i) for i in np.linspace(0, total_frames - 1, n).round().astype(int)]


def padded(indices: list[int]) -> list[int]:
    """``indices`` with the last repeated until the count is a multiple of the pair size."""
    out = list(indices)
    while out and len(out) % TEMPORAL_PATCH:
        out.append(out[-1])
    return out


def pair_timestamps(indices: list[int], source_fps: float) -> list[float]:
    """Seconds for each frame pair: the mean time of its first and last frame."""
    source_fps = source_fps if source_fps and source_fps > 0 else DEFAULT_SOURCE_FPS
    times = [i / source_fps for i in padded(indices)]
    return [(times[i] + times[i + TEMPORAL_PATCH - 1]) / 2
            for i in range(0, len(times), TEMPORAL_PATCH)]

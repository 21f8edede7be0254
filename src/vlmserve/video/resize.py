"""The frame size of a clip: Qwen3-VL's video ``smart_resize``, budgeted in tokens.

Qwen's video rule bounds ``frames x height x width`` (not one frame's pixels): sides are
multiples of 32 px, the total within ``[min_pixels, max_pixels]``, the aspect ratio kept
as well as the grid allows, Python's rounding (halves to even) first, then ``floor`` when
too large and ``ceil`` when too small. vlmserve sets ``max_pixels`` from the clip's token
budget: a pair of frames is one chunk of ``(h / 32) * (w / 32)`` tokens, so ``tokens <=
max_tokens`` is ``frames * h * w <= max_tokens * 2 * 32 * 32``. Every frame is resized to
this size once, so llama.cpp's mtmd keeps it.
"""

from __future__ import annotations

import math

from vlmserve.images.smart_resize import FACTOR, check_aspect_ratio
from vlmserve.video.sampling import TEMPORAL_PATCH


def clip_pixel_bounds(max_tokens: int, min_pixels: int) -> tuple[int, int]:
    """``(min_pixels, max_pixels)`` over frames x height x width for a token budget."""
    max_pixels = max_tokens * TEMPORAL_PATCH * FACTOR * FACTOR
    return min(min_pixels, max_pixels), max_pixels


def video_frame_size(num_frames: int, width: int, height: int, *, min_pixels: int,
                     max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """``(width, height)`` every frame of a ``num_frames`` clip is resized to."""
    check_aspect_ratio(width, height)
    num_frames = max(num_frames, TEMPORAL_PATCH)
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / TEMPORAL_PATCH) * TEMPORAL_PATCH
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar

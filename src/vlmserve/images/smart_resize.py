"""Qwen's ``smart_resize``: the size an image is given before the vision tower sees it.

Qwen2-VL / Qwen3-VL were trained on images resized by their processor to sides that
are multiples of ``factor`` (patch 16 x merge 2 = 32 px for Qwen3-VL), with the pixel
count inside ``[min_pixels, max_pixels]`` and the aspect ratio kept as well as the
grid allows. vlmserve resizes with this rule itself, once, so llama.cpp's mtmd receives
a size it leaves alone (its own rule rounds halves away from zero and has a floor of
8 tokens, which gives different grids: 400x400 is 13x13 there, 12x12 here).

The arithmetic follows the Hugging Face image processor: Python's ``round`` (halves to
even) for the first guess, then ``floor`` when too large and ``ceil`` when too small,
in float64, in the same order of operations, so edge cases agree too.
"""

from __future__ import annotations

import math

from vlmserve.errors import ImageError

FACTOR = 32  # Qwen3-VL: 16 px patches, 2 x 2 merged into one token
MAX_ASPECT_RATIO = 200  # Qwen's processor refuses anything longer and thinner


class AspectRatioError(ImageError):
    """An image longer and thinner than the model accepts (HTTP 400)."""


def check_aspect_ratio(width: float, height: float) -> None:
    """Refuse sizes whose long side is more than 200 times the short side."""
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise AspectRatioError(
            f"image is {width}x{height}: an aspect ratio of {ratio:.0f}:1 is over Qwen-VL's "
            f"limit of {MAX_ASPECT_RATIO}:1; crop it to a less extreme strip")


def smart_resize(width: float, height: float, *, min_pixels: int, max_pixels: int,
                 factor: int = FACTOR) -> tuple[int, int]:
    """``(width, height)`` rounded to multiples of ``factor`` within the pixel bounds.

    Raises ``AspectRatioError`` past an aspect ratio of 200. ``min_pixels`` and
    ``max_pixels`` are token counts times ``factor ** 2``. The size may be fractional
    (a picture scaled to an edge cap before any pixel is resampled).
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"image size must be positive, got {width}x{height}")
    check_aspect_ratio(width, height)
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar

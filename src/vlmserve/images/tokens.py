"""How many vision tokens llama.cpp's mtmd gives a Qwen3-VL image.

The engine needs this number before it encodes an image (to plan KV space and
refuse prompts that cannot fit), so it must equal what mtmd will produce, not
approximately but exactly. mtmd resizes every image to a multiple of
``align = patch_size * merge`` pixels a side with ``calc_size_preserved_ratio``
(tools/mtmd/mtmd-image.cpp, the min/max-pixels overload) and emits one token
per ``align x align`` block. This module repeats that computation, including
its float32 arithmetic and C++ rounding, so the edge cases agree as well.
"""

from __future__ import annotations

import math

import numpy as np

from vlmserve.errors import ImageError

# Qwen3-VL's vision tower: 16 px patches, 2x2 patches merged into one token,
# and mtmd's token limits for the Qwen-VL projectors (clip.cpp,
# set_limit_image_tokens(8, 4096)).
PATCH_SIZE = 16
MERGE = 2
MIN_TOKENS = 8
MAX_TOKENS = 4096

_f32 = np.float32


def image_grid(
    width: int,
    height: int,
    *,
    patch_size: int = PATCH_SIZE,
    merge: int = MERGE,
    min_tokens: int = MIN_TOKENS,
    max_tokens: int = MAX_TOKENS,
) -> tuple[int, int]:
    """The token grid ``(grid_w, grid_h)`` mtmd uses for a ``width x height`` image.

    Each cell is one vision token (one merged ``align x align`` pixel block),
    so ``grid_w * grid_h`` is the image's token count. ``min_tokens`` and
    ``max_tokens`` are the projector's limits (``--image-min-tokens`` /
    ``--image-max-tokens`` in llama.cpp).
    """
    for name, value in (("width", width), ("height", height), ("patch_size", patch_size),
                        ("merge", merge), ("min_tokens", min_tokens), ("max_tokens", max_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ImageError(f"{name} must be a positive integer, got {value!r}")
    if min_tokens > max_tokens:
        raise ImageError(f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})")

    align = patch_size * merge
    min_pixels = min_tokens * align * align
    max_pixels = max_tokens * align * align
    f_align = _f32(align)

    # The C++ lambdas take a float and divide by (float)align in float32, then
    # std::round (half away from zero), std::ceil or std::floor. The quotient is
    # an exact float32, so doing the rounding on it as a Python float is exact.
    def round_by(x: np.float32) -> int:
        return math.floor(float(_f32(x) / f_align) + 0.5) * align  # x > 0: half away from zero

    def ceil_by(x: np.float32) -> int:
        return math.ceil(float(_f32(x) / f_align)) * align

    def floor_by(x: np.float32) -> int:
        return math.floor(float(_f32(x) / f_align)) * align

    h_bar = max(align, round_by(_f32(height)))
    w_bar = max(align, round_by(_f32(width)))
    # (C++ computes height * width in int; for the sizes our pipeline produces
    # that never overflows, so Python's exact product gives the same value.)
    if h_bar * w_bar > max_pixels:
        beta = np.sqrt(_f32(height * width) / _f32(max_pixels))
        h_bar = max(align, floor_by(_f32(height) / beta))
        w_bar = max(align, floor_by(_f32(width) / beta))
    elif h_bar * w_bar < min_pixels:
        beta = np.sqrt(_f32(min_pixels) / _f32(height * width))
        h_bar = ceil_by(_f32(height) * beta)
        w_bar = ceil_by(_f32(width) * beta)
    return w_bar // align, h_bar // align


def image_token_count(
    width: int,
    height: int,
    *,
    patch_size: int = PATCH_SIZE,
    merge: int = MERGE,
    min_tokens: int = MIN_TOKENS,
    max_tokens: int = MAX_TOKENS,
) -> int:
    """The number of vision tokens mtmd produces for a ``width x height`` image.

    Examples: 768x768 gives 576 tokens (a 24 x 24 grid), 1024x512 gives 512.
    """
    grid_w, grid_h = image_grid(width, height, patch_size=patch_size, merge=merge,
                                min_tokens=min_tokens, max_tokens=max_tokens)
    return grid_w * grid_h

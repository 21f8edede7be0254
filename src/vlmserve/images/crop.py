"""A zoom on a detail: a region of the upright image, in fractions of its size.

Kept apart from the pipeline because it is plain geometry (no Pillow): the page
and the API validate a region when the request arrives, before any decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vlmserve.errors import ImageError


@dataclass(frozen=True)
class CropRegion:
    """A region of the upright image, in fractions of its width and height.

    ``x, y`` is the top-left corner, ``w, h`` the size; all in 0..1, and the
    region must lie inside the image. Used to zoom on a detail: the region is
    scaled so its longest edge is ``max_edge`` (enlarged when smaller).
    """

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.w, self.h)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            raise ImageError(f"crop region values must be finite numbers, got {values!r}")
        if not (0.0 <= self.x < 1.0 and 0.0 <= self.y < 1.0):
            raise ImageError(f"crop x and y must be in [0, 1), got x={self.x}, y={self.y}")
        if not (0.0 < self.w <= 1.0 and 0.0 < self.h <= 1.0):
            raise ImageError(f"crop w and h must be in (0, 1], got w={self.w}, h={self.h}")
        # A little slack for fractions computed from pixels: 3 * (1/91) + 88 * (1/91)
        # is 1.0000000000000002 in floating point.
        if self.x + self.w > 1.0 + 1e-9 or self.y + self.h > 1.0 + 1e-9:
            raise ImageError(
                "crop region must lie inside the image (x + w <= 1 and y + h <= 1), "
                f"got x={self.x}, y={self.y}, w={self.w}, h={self.h}"
            )

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The pixel box ``(left, top, right, bottom)`` of this region on a ``width x height`` image."""
        left, top = round_half_up(self.x * width), round_half_up(self.y * height)
        right = min(width, round_half_up((self.x + self.w) * width))
        bottom = min(height, round_half_up((self.y + self.h) * height))
        if right <= left or bottom <= top:
            raise ImageError(f"crop region is smaller than one pixel of this {width}x{height} image")
        return left, top, right, bottom


def round_half_up(value: float) -> int:
    # Python's round() goes to even (round(0.5) == 0); pixel geometry wants half up.
    return math.floor(value + 0.5)

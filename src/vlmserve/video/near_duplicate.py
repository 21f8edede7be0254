"""Near-duplicate frames: a perceptual hash (``imagehash``'s dHash) per frame.

A camera pointed at a still scene sends the same picture over and over, with sensor
noise and JPEG artefacts that change its bytes but not its content. dHash reduces a frame
to 64 bits of brightness gradients; two frames within ``max_distance`` bits (Hamming
distance) show the same scene, and only the first is described. Each stream compares a
frame with the last one it described, so a slow drift still gets described once it has
moved far enough.
"""

from __future__ import annotations

import imagehash
from PIL import Image

DEFAULT_MAX_DISTANCE = 4  # of 64 bits


class NearDuplicateFilter:
    """``is_new(image)``: False when ``image`` looks like the last frame that was new."""

    def __init__(self, max_distance: int = DEFAULT_MAX_DISTANCE) -> None:
        if not -1 <= max_distance <= 64:  # -1: no frame is a duplicate
            raise ValueError(f"max_distance must be in [-1, 64], got {max_distance}")
        self.max_distance = max_distance
        self._last: imagehash.ImageHash | None = None

    def is_new(self, image: Image.Image) -> bool:
        if self.max_distance < 0:
            return True
        h = imagehash.dhash(image)
        if self._last is not None and h - self._last <= self.max_distance:
            return False
        self._last = h
        return True

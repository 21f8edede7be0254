"""Near-duplicate frames: a perceptual hash (``imagehash``'s dHash) per frame.

A camera pointed at a still scene sends the same picture over and over, with sensor
noise and JPEG artefacts that change its bytes but not its content. dHash reduces a frame
to 64 bits of brightness gradients; two frames within ``max_distance`` bits (Hamming
distance) show the same scene, and only the first is described. Each stream compares a
frame with the last one it *described* (``accept``), so a slow drift is still described
once it has moved far enough, and a frame that could not be queued is not remembered.
"""

from __future__ import annotations

import imagehash
from PIL import Image

DEFAULT_MAX_DISTANCE = 4  # of 64 bits


class NearDuplicateFilter:
    """``check(image)``: the frame's hash, or None when it looks like the last accepted."""

    def __init__(self, max_distance: int = DEFAULT_MAX_DISTANCE) -> None:
        if not -1 <= max_distance <= 64:  # -1: no frame is a duplicate
            raise ValueError(f"max_distance must be in [-1, 64], got {max_distance}")
        self.max_distance = max_distance
        self._last: imagehash.ImageHash | None = None

    def check(self, image: Image.Image) -> imagehash.ImageHash | None:
        h = imagehash.dhash(image)
        if (self.max_distance >= 0 and self._last is not None
                and h - self._last <= self.max_distance):
            return None
        return h

    def accept(self, h: imagehash.ImageHash) -> None:
        """``h`` (from ``check``) was described: later frames are compared with it."""
        self._last = h

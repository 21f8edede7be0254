"""What a response says about a clip it saw (``x_vlmserve.videos``, ``describe --json``)."""

from __future__ import annotations

from typing import Any

from vlmserve.types import PreparedClip


def clip_summary(clip: PreparedClip) -> dict[str, Any]:
    """Frames sampled and sent (an odd count repeats its last), pairs, size, pair times."""
    return {"frames": clip.source_frames, "frames_sent": len(clip.frames),
            "pairs": clip.n_pairs, "size": [clip.width, clip.height],
            "timestamps": list(clip.timestamps), "duration_s": round(clip.duration_s, 3)}

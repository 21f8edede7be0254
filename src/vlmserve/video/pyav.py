"""PyAV, imported on first use, with a one-line error when it is not installed.

PyAV's wheel carries FFmpeg (no system install); it is the ``video`` extra of vlmserve,
so a box that never sees video does not need it.
"""

from __future__ import annotations

from types import ModuleType

from vlmserve.errors import VideoError


def import_av() -> ModuleType:
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV, which is not installed: "
                         "pip install 'vlmserve[video]'") from None
    return av

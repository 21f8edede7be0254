"""Where clip bytes come from: a file or a ``data:video/...`` URI, size-checked first.

The same rules as images (``images.sources``): the byte limit is applied before anything
is read or decoded; errors are ``VideoError`` / ``VideoTooLargeError`` and name the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmserve.errors import ImageError, ImageTooLargeError, VideoError, VideoTooLargeError
from vlmserve.images.sources import decode_data_uri, read_image_bytes
from vlmserve.types import PreparedClip
from vlmserve.video.options import Sampling, VideoOptions
from vlmserve.video.prepare import DEFAULT_VIDEO_OPTIONS, prepare_clip

# What `describe` and the page take for a clip rather than a picture.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                  ".flv", ".3gp", ".ogv", ".wmv")


def is_video_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _as_video_error(exc: ImageError) -> VideoError:
    message = exc.message.replace("image", "video")
    return VideoTooLargeError(message) if isinstance(exc, ImageTooLargeError) else VideoError(message)


def read_video_bytes(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    try:
        return read_image_bytes(path, max_bytes)
    except ImageError as exc:
        raise _as_video_error(exc) from None


def decode_video_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:video/<type>;base64,...`` URI."""
    try:
        return decode_data_uri(uri, max_bytes, media="video")
    except ImageError as exc:
        raise _as_video_error(exc) from None


def load_clip_file(path: str | os.PathLike[str], options: VideoOptions = DEFAULT_VIDEO_OPTIONS,
                   sampling: Sampling | None = None) -> PreparedClip:
    """``prepare_clip`` on a file; errors name the path."""
    p = Path(path)
    try:
        return prepare_clip(read_video_bytes(p, options.max_bytes), options, sampling)
    except VideoError as exc:
        raise type(exc)(f"{p}: {exc.message}") from exc

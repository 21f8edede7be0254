"""Cheap limit checks for the image pipeline, run before any pixel is decoded.

An upload can be small on the wire and huge once decoded (a 50,000 x 50,000
PNG of one colour compresses to a few kilobytes), or cheap per frame and
expensive in count (a GIF of a million 1x1 frames). These checks read only
headers, so refusing such a file costs microseconds and almost no memory.

The frame count itself comes from ``formats.frame_count`` (which uses the
container walkers in ``containers``); this module only compares numbers.
"""

from __future__ import annotations

from vlmserve.errors import ImageTooLargeError

_MB = 1024 * 1024


def check_byte_size(n_bytes: int, max_bytes: int) -> None:
    """Refuse an upload over ``max_bytes`` before reading or decoding it."""
    if n_bytes > max_bytes:
        raise ImageTooLargeError(
            f"image is {_human_bytes(n_bytes)}, over the limit of {_human_bytes(max_bytes)}"
        )


def _human_bytes(n: int) -> str:
    if n >= _MB:
        return f"{n / _MB:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} kB"
    return f"{n} bytes"


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image whose header size decodes to more than ``max_pixels``."""
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} pixels ({width * height / 1e6:.1f} MP), "
            f"over the {max_pixels / 1e6:.1f} MP limit"
        )


def check_header(n_bytes: int, width: int, height: int, n_frames: int, max_bytes: int,
                 max_pixels: int, max_frames: int) -> None:
    """Every limit an image's header can break, in the order a person would ask."""
    check_byte_size(n_bytes, max_bytes)
    check_pixel_count(width, height, max_pixels)
    check_frame_count(n_frames, max_frames)


def check_frame_count(n_frames: int, max_frames: int) -> None:
    """Refuse an animation or multi-page file with more than ``max_frames`` frames."""
    if n_frames > max_frames:
        raise ImageTooLargeError(f"image has more than {max_frames} frames (the limit)")

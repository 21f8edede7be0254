"""Cheap limit checks for the image pipeline, run before any pixel is decoded.

An upload can be small on the wire and huge once decoded (a 50,000 x 50,000
PNG of one colour compresses to a few kilobytes), or cheap per frame and
expensive in count (a GIF of a million 1x1 frames). These checks read only
headers, so refusing such a file costs microseconds and almost no memory.

Frame counting is done here rather than with Pillow's ``n_frames`` because,
for GIF and TIFF, ``n_frames`` walks the whole file in Python before it
answers; the walkers below stop as soon as the count passes the limit.
"""

from __future__ import annotations

import struct

from vlmserve.errors import ImageTooLargeError

_MB = 1024 * 1024

# ISO-BMFF brands of HEIF-family files (HEIC stills, HEIF sequences). Used only
# to name the problem when pillow-heif is missing, never to decode.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


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


def check_frame_count(n_frames: int, max_frames: int) -> None:
    """Refuse an animation or multi-page file with more than ``max_frames`` frames."""
    if n_frames > max_frames:
        raise ImageTooLargeError(f"image has more than {max_frames} frames (the limit)")


def looks_like_heif(data: bytes) -> bool:
    """True when ``data`` starts like an ISO-BMFF file of a HEIF brand."""
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def gif_frame_count(data: bytes, stop_after: int) -> int:
    """Count the images in a GIF, stopping once the count exceeds ``stop_after``.

    Walks the block structure (extensions and image descriptors, each followed
    by length-prefixed sub-blocks) by index arithmetic on ``data``: no copies,
    no decoding. Like Pillow, it stops at the trailer or at the end of the data
    and steps over stray bytes, so it counts the frames Pillow would find.
    """
    n = len(data)
    if n < 13:
        return 0
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # skip global colour table
    frames = 0
    while pos < n:
        tag = data[pos]
        if tag == 0x3B:  # trailer
            break
        if tag == 0x2C:  # image descriptor: 9 bytes, optional local colour table, LZW code size
            frames += 1
            if frames > stop_after:
                break
            if pos + 10 > n:
                break
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            pos = _skip_sub_blocks(data, pos)
        elif tag == 0x21:  # extension: label byte, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        else:
            pos += 1
    return frames


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    # Each sub-block is one length byte and that many bytes; a zero length ends the run.
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1
        if size == 0:
            break
        pos += size
    return pos


def tiff_frame_count(data: bytes, stop_after: int) -> int:
    """Count the pages (top-level IFDs) of a TIFF, stopping past ``stop_after``.

    Follows the chain of "next IFD" offsets (classic TIFF and BigTIFF) without
    parsing any tag. A chain that loops back on itself is counted once per
    distinct IFD, so a crafted loop cannot keep it busy.
    """
    if data[:2] == b"II":
        order = "<"
    elif data[:2] == b"MM":
        order = ">"
    else:
        return 0
    try:
        (magic,) = struct.unpack_from(order + "H", data, 2)
        if magic == 43:  # BigTIFF: 8-byte offsets, 8-byte counts, 20-byte entries
            count_fmt, offset_fmt, entry_size = "Q", "Q", 20
            (offset,) = struct.unpack_from(order + "Q", data, 8)
        else:
            count_fmt, offset_fmt, entry_size = "H", "I", 12
            (offset,) = struct.unpack_from(order + "I", data, 4)
    except struct.error:
        return 0
    count_size = struct.calcsize(count_fmt)
    seen: set[int] = set()
    frames = 0
    while offset and offset not in seen and frames <= stop_after:
        seen.add(offset)
        try:
            (entries,) = struct.unpack_from(order + count_fmt, data, offset)
            frames += 1
            (offset,) = struct.unpack_from(
                order + offset_fmt, data, offset + count_size + entries * entry_size
            )
        except struct.error:  # an offset past the end: the chain stops here
            break
    return frames

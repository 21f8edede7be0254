"""Container parsers that answer a question from raw bytes, without Pillow.

Pillow's ``n_frames`` for GIF and TIFF walks the whole file in Python before it
answers; the walkers here stop as soon as the count passes the limit, so a GIF
of a million 1x1 frames costs microseconds. ``looks_like_heif`` only names the
problem when pillow-heif is missing. Nothing here decodes a pixel or imports
another module of the package: ``formats`` calls down into it.
"""

from __future__ import annotations

import struct

# ISO-BMFF brands of HEIF-family files (HEIC stills, HEIF sequences). Used only
# to name the problem when pillow-heif is missing, never to decode.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


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

"""Where image bytes come from: a file or a ``data:`` URI, size-checked before reading.

The byte limit is applied here before anything is read or decoded (a file's
``stat``, a URI's base64 length), then ``prepare.prepare_image`` takes over.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from vlmserve.config import ImageOptions
from vlmserve.errors import ImageError
from vlmserve.images.crop import CropRegion
from vlmserve.images.limits import check_byte_size
from vlmserve.images.prepare import DEFAULT_OPTIONS, prepare_image
from vlmserve.types import PreparedImage


def load_image_file(
    path: str | os.PathLike[str],
    options: ImageOptions = DEFAULT_OPTIONS,
    crop: CropRegion | None = None,
) -> PreparedImage:
    """``prepare_image`` on a file, with the size limit checked before reading it.

    Errors name the path: ``"photo.heic: HEIC/HEIF image, but pillow-heif is not installed"``.
    """
    p = Path(path)
    try:
        return prepare_image(read_image_bytes(p, options.max_bytes), options, crop)
    except ImageError as exc:
        raise type(exc)(f"{p}: {exc.message}") from exc


def decode_data_uri(uri: str, max_bytes: int, media: str = "image") -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URI (``media="video"``: ``data:video/...``).

    The decoded size is estimated from the base64 length and refused
    (``ImageTooLargeError``) before anything is decoded. Whitespace inside the
    payload and missing ``=`` padding are tolerated; other defects are errors.
    """
    if not isinstance(uri, str):
        raise ImageError(f"data URI must be a string, got {type(uri).__name__}")
    head, comma, payload = uri.partition(",")
    if not comma or head[:5].lower() != "data:":
        raise ImageError("malformed data URI (expected data:image/<type>;base64,<data>)")
    media_type, *params = (part.strip().lower() for part in head[5:].split(";"))
    if not media_type.startswith(f"{media}/"):
        raise ImageError(f"data URI is not {'an' if media[0] in 'aeiou' else 'a'} {media} "
                         f"(media type {media_type[:40] or 'missing'!r})")
    if "base64" not in params:
        raise ImageError("data URI must be base64-encoded (data:image/<type>;base64,...)")
    # Line-wrapped (MIME-style) base64 is common; without whitespace this is no copy.
    payload = "".join(payload.split())
    if not payload:
        raise ImageError("data URI has no image data")
    if len(payload) % 4 == 1:
        raise ImageError("data URI has invalid base64 data (bad length)")
    payload += "=" * (-len(payload) % 4)  # some encoders leave the padding out
    check_byte_size(len(payload) // 4 * 3 - payload[-2:].count("="), max_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("data URI has invalid base64 data") from exc


def read_image_bytes(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """A file's bytes, refusing non-files and files over ``max_bytes`` (``ImageError``)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("not a regular file")
    check_byte_size(st.st_size, max_bytes)
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # bounded: the file may have grown since stat()
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None
    check_byte_size(len(data), max_bytes)
    return data

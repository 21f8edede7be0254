"""Image preprocessing: untrusted bytes in, a ``PreparedImage`` out.

Pipeline (``prepare_image``):

1. byte limit, then the header only: format, size, frame count
   (``image_formats``, ``image_limits``);
2. decode the first frame (JPEG is decoded at a reduced DCT scale when it will
   be shrunk anyway, as Pillow's ``thumbnail`` does);
3. EXIF orientation, so the model sees the picture the way a person does;
4. optional crop (a zoom: the region is scaled so its longest edge is ``max_edge``);
5. any colour mode to 8-bit RGB, transparency over white (``image_modes``);
6. resize so the longest edge is at most ``max_edge`` (Lanczos);
7. ``PreparedImage.from_rgb``: the content hash covers pixels, not the container.

Every failure is an ``ImageError`` (or ``ImageTooLargeError``) with a one-line
message; no Pillow exception escapes. The token arithmetic that mirrors
llama.cpp's mtmd lives in ``image_tokens`` and is re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, ImageOps

from vlmserve.config import ImageOptions
from vlmserve.errors import ImageError, ImageTooLargeError
from vlmserve.image_formats import (
    DECODE_ERRORS,
    decode_pixels,
    frame_count,
    open_header,
)
from vlmserve.image_limits import check_byte_size, check_frame_count, check_pixel_count
from vlmserve.image_modes import to_rgb
from vlmserve.image_tokens import image_grid, image_token_count
from vlmserve.types import PreparedImage

__all__ = [
    "CropRegion",
    "decode_data_uri",
    "image_grid",
    "image_token_count",
    "load_image_file",
    "prepare_image",
    "to_jpeg",
]

_DEFAULT_OPTIONS = ImageOptions()  # frozen, so sharing one instance as a default is safe


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
        left, top = _round_half_up(self.x * width), _round_half_up(self.y * height)
        right = min(width, _round_half_up((self.x + self.w) * width))
        bottom = min(height, _round_half_up((self.y + self.h) * height))
        if right <= left or bottom <= top:
            raise ImageError(f"crop region is smaller than one pixel of this {width}x{height} image")
        return left, top, right, bottom


def prepare_image(
    data: bytes,
    options: ImageOptions = _DEFAULT_OPTIONS,
    crop: CropRegion | None = None,
) -> PreparedImage:
    """Decode, orient, optionally crop, convert to RGB and resize an uploaded image.

    Accepts JPEG, PNG, WebP, GIF (first frame), BMP, TIFF (first page), and
    HEIC/HEIF when pillow-heif is installed. Raises ``ImageTooLargeError`` for
    files over the byte, pixel or frame limits of ``options`` (checked before
    decoding) and ``ImageError`` for anything that is not a readable image.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)  # no copy when it already is bytes
    if not data:
        raise ImageError("image data is empty")
    check_byte_size(len(data), options.max_bytes)
    try:
        with open_header(data) as source:
            check_pixel_count(source.width, source.height, options.max_pixels)
            check_frame_count(frame_count(source, data, options.max_frames), options.max_frames)
            shrunk = _fit(source.size, options.max_edge, upscale=False)
            if crop is None and source.format in ("JPEG", "MPO") and shrunk != source.size:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is
                # still at least the target size: faster, and a fraction of the memory.
                source.draft(None, shrunk)
            decode_pixels(source)
            image = _upright(source)
            if crop is not None:
                image = image.crop(crop.box(image.width, image.height))
                target = _fit(image.size, options.max_edge, upscale=True)  # a crop is a zoom
            else:
                target = _fit(image.size, options.max_edge, options.upscale)
            rgb = to_rgb(image)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.LANCZOS,
                                 reducing_gap=3.0 if target[0] < rgb.width else None)
            return PreparedImage.from_rgb(rgb.tobytes(), rgb.width, rgb.height)
    except MemoryError as exc:
        raise ImageTooLargeError("image is too large to decode in the memory available") from exc


def load_image_file(
    path: str | os.PathLike[str],
    options: ImageOptions = _DEFAULT_OPTIONS,
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


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URI.

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
    if not media_type.startswith("image/"):
        raise ImageError(f"data URI is not an image (media type {media_type[:40] or 'missing'!r})")
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


def to_jpeg(image: PreparedImage, quality: int = 85) -> bytes:
    """Encode a prepared image as JPEG (for storing or sending, never for the model)."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ImageError(f"JPEG quality must be an integer in [1, 100], got {quality!r}")
    im = Image.frombytes("RGB", (image.width, image.height), image.rgb)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- internals -------------------------------------------------------------------------


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


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF (or XMP) Orientation tag, so the picture is upright."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im)
    except DECODE_ERRORS:
        # Unreadable EXIF is common in real photos; keep the pixels as stored
        # rather than refuse a picture the model can still look at.
        pass
    return im


def _fit(size: tuple[int, int], max_edge: int, upscale: bool) -> tuple[int, int]:
    """The size with the longest edge scaled to ``max_edge`` (only down unless ``upscale``)."""
    width, height = size
    longest = max(width, height)
    if longest == max_edge or (longest < max_edge and not upscale):
        return size
    scale = max_edge / longest
    if width >= height:
        return max_edge, max(1, _round_half_up(height * scale))
    return max(1, _round_half_up(width * scale)), max_edge


def _round_half_up(value: float) -> int:
    # Python's round() goes to even (round(0.5) == 0); pixel geometry wants half up.
    return math.floor(value + 0.5)

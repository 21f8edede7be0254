"""Which image formats we accept, and opening them safely with Pillow.

Only the plugins listed here ever see untrusted bytes: Pillow knows ~40
formats, and every extra parser is extra attack surface for no benefit to the
model. Everything Pillow raises on malformed data is turned into an
``ImageError`` here, so callers only ever see our errors.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageFile

from vlmserve.config import ImageOptions
from vlmserve.errors import ImageError, ImageTooLargeError
from vlmserve.images.containers import gif_frame_count, looks_like_heif, tiff_frame_count
from vlmserve.images.limits import check_header

# Pillow format ids we decode, in probing order.
BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
HEIF_FORMAT = "HEIF"  # registered by pillow-heif, when it is installed

# How to name a format to a person (MPO is a JPEG with extra frames, from cameras).
_NAMES = {
    "JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF",
    "BMP": "BMP", "TIFF": "TIFF", "HEIF": "HEIC/HEIF",
}

# Pillow's own bomb check still runs inside a few plugins (a GIF frame larger
# than its canvas, TIFF tiles, WebP). Its error, and its warning where a caller
# runs with warnings as errors, become our ImageTooLargeError.
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# What Pillow's header parsers and decoders (and pillow-heif's) raise on
# malformed data: a wide, version-dependent set. Caught only around calls into
# Pillow, so that a bug in our own code still surfaces as what it is.
DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, TypeError, LookupError, EOFError, ArithmeticError,
    RuntimeError, struct.error, zlib.error,
)


def format_name(im: Image.Image) -> str:
    """A person-readable name of an opened image's format ("WebP", "HEIC/HEIF")."""
    return _NAMES.get(im.format or "", im.format or "image")


def heif_available() -> bool:
    """Register pillow-heif's opener with Pillow on first use; False when it is missing.

    Done lazily, not at import, so that importing vlmserve has no side effects
    and a broken libheif only disables HEIC instead of breaking every image.
    Pillow's plugin registry is the only state, and registering is idempotent.
    """
    if HEIF_FORMAT in Image.OPEN:
        return True
    try:
        import pillow_heif
    except (ImportError, OSError):
        return False
    pillow_heif.register_heif_opener()
    return HEIF_FORMAT in Image.OPEN


def accepted_formats() -> tuple[str, ...]:
    """Pillow format ids we decode, HEIF included when pillow-heif is importable."""
    return BASE_FORMATS + ((HEIF_FORMAT,) if heif_available() else ())


def open_header(data: bytes) -> ImageFile.ImageFile:
    """Identify the format and parse the header only; no pixel data is decoded.

    This does what ``Image.open`` does (the first plugin whose ``accept``
    matches the first 16 bytes parses the header) but restricted to our formats
    and without ``Image.open``'s own decompression-bomb check. That check
    compares against Pillow's process-global ``MAX_IMAGE_PIXELS`` and only
    *warns* between one and two times that limit; changing the global or the
    warning filters is process-wide and not thread-safe. The caller applies
    our ``max_pixels`` right after this returns instead, before decoding.
    """
    Image.init()  # registers Pillow's built-in plugins; a no-op after the first call
    prefix = data[:16]
    formats = accepted_formats()
    for fmt in formats:
        entry = Image.OPEN.get(fmt)
        if entry is None:  # a plugin this Pillow build does not have
            continue
        factory, accept = entry
        verdict = accept(prefix) if accept is not None else True
        if not verdict:
            continue
        name = _NAMES[fmt]
        if isinstance(verdict, str):  # Pillow's "recognized, but support not compiled in"
            raise ImageError(f"{name} image, but this Pillow build cannot decode {name}")
        try:
            return factory(io.BytesIO(data), "")
        except _BOMB as exc:
            raise ImageTooLargeError(f"{name} image is too large to decode safely") from exc
        except DECODE_ERRORS as exc:
            raise ImageError(f"truncated or corrupt {name} image") from exc
    if looks_like_heif(data):
        raise ImageError("HEIC/HEIF image, but pillow-heif is not installed")
    names = ", ".join(dict.fromkeys(_NAMES[f] for f in formats))
    raise ImageError(f"not an image (unrecognized format; accepted: {names})")


def open_checked(data: bytes, options: ImageOptions) -> ImageFile.ImageFile:
    """The header opened and every limit of ``options`` checked; no pixel decoded yet.

    One call for what the pipeline needs before decoding, so the bytes go down
    through formats -> containers / limits once. Close the result (a context manager).
    """
    source = open_header(data)
    try:
        n_frames = frame_count(source, data, options.max_frames)
        check_header(len(data), source.width, source.height, n_frames, options.max_bytes,
                     options.max_pixels, options.max_frames)
    except BaseException:
        source.close()
        raise
    return source


def frame_count(im: ImageFile.ImageFile, data: bytes, max_frames: int) -> int:
    """The number of frames (pages), or any number above ``max_frames`` once that is certain."""
    # GIF and TIFF: Pillow's n_frames walks the whole file in Python; ours stop
    # as soon as the limit is passed.
    if im.format == "GIF":
        return gif_frame_count(data, max_frames)
    if im.format == "TIFF":
        return tiff_frame_count(data, max_frames)
    try:  # PNG (acTL chunk), WebP, MPO, HEIF: a number read with the header, cheap
        return int(getattr(im, "n_frames", 1))
    except DECODE_ERRORS as exc:
        raise ImageError(f"truncated or corrupt {format_name(im)} image") from exc


def decode_pixels(im: ImageFile.ImageFile) -> None:
    """Decode the current (first) frame, turning Pillow's errors into ours."""
    try:
        im.load()
    except _BOMB as exc:
        raise ImageTooLargeError(f"{format_name(im)} image is too large to decode safely") from exc
    except DECODE_ERRORS as exc:
        raise ImageError(f"truncated or corrupt {format_name(im)} image") from exc

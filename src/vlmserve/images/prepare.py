"""Image preprocessing: untrusted bytes in, a ``PreparedImage`` out.

Pipeline (``prepare_image``):

1. byte limit, then the header only: format, size, frame count
   (``formats``, ``limits``);
2. decode the first frame (JPEG is decoded at a reduced DCT scale when it will
   be shrunk anyway, as Pillow's ``thumbnail`` does);
3. EXIF orientation, so the model sees the picture the way a person does;
4. optional crop (a zoom: the region is scaled so its longest edge is ``max_edge``);
5. any colour mode to 8-bit RGB, transparency over white (``modes``);
6. resize so the longest edge is at most ``max_edge`` (Lanczos);
7. ``PreparedImage.from_rgb``: the content hash covers pixels, not the container.

Every failure is an ``ImageError`` (or ``ImageTooLargeError``) with a one-line
message; no Pillow exception escapes. Reading a file or a ``data:`` URI is
``sources``' job, one level above; the token rule is ``tokens``, beside it.
"""

from __future__ import annotations

from PIL import ExifTags, Image, ImageOps

from vlmserve.config import ImageOptions
from vlmserve.errors import ImageError, ImageTooLargeError
from vlmserve.images.crop import CropRegion, round_half_up
from vlmserve.images.formats import DECODE_ERRORS, decode_pixels, frame_count, open_header
from vlmserve.images.limits import check_byte_size, check_frame_count, check_pixel_count
from vlmserve.images.modes import to_rgb
from vlmserve.types import PreparedImage

DEFAULT_OPTIONS = ImageOptions()  # frozen, so sharing one instance as a default is safe


def prepare_image(
    data: bytes,
    options: ImageOptions = DEFAULT_OPTIONS,
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
        return max_edge, max(1, round_half_up(height * scale))
    return max(1, round_half_up(width * scale)), max_edge

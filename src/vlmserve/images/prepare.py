"""Image preprocessing: untrusted bytes in, a ``PreparedImage`` out.

Pipeline (``prepare_image``):

1. the header only (format, size, frame count), then every limit it can break:
   bytes, pixels, frames (``formats.open_checked``, which goes down to
   ``containers`` and ``limits`` once; files and ``data:`` URIs had their byte limit
   checked by ``sources`` before they were read);
2. decode the first frame (JPEG is decoded at a reduced DCT scale when it will
   be shrunk anyway, as Pillow's ``thumbnail`` does);
3. EXIF orientation, so the model sees the picture the way a person does;
4. optional crop (a zoom: the region is scaled so its longest edge is ``max_edge``);
5. any colour mode to 8-bit RGB, transparency over white (``modes``);
6. one resize (Lanczos) to the size Qwen's ``smart_resize`` gives the picture, its
   longest edge first capped at ``max_edge``: sides multiples of 32 px, the token count
   within the request's budget, so mtmd adds no resize of its own;
7. ``PreparedImage.from_rgb``: the content hash covers pixels, not the container;
   ``ImageGeometry`` records orientation, crop and size for mapping boxes back.

Every failure is an ``ImageError`` (or ``ImageTooLargeError``) with a one-line
message; no Pillow exception escapes. Reading a file or a ``data:`` URI is
``sources``' job, one level above; the token rule is ``tokens``, beside it.
"""

from __future__ import annotations

from PIL import ExifTags, Image, ImageOps

from vlmserve.config import ImageOptions, TokenBudget
from vlmserve.errors import ImageError, ImageTooLargeError
from vlmserve.images.crop import CropRegion
from vlmserve.images.formats import DECODE_ERRORS, decode_pixels, open_checked
from vlmserve.images.modes import to_rgb
from vlmserve.images.smart_resize import FACTOR, check_aspect_ratio, smart_resize
from vlmserve.types import ImageGeometry, PreparedImage

DEFAULT_OPTIONS = ImageOptions()  # frozen, so sharing one instance as a default is safe


def prepare_image(
    data: bytes,
    options: ImageOptions = DEFAULT_OPTIONS,
    crop: CropRegion | None = None,
    tokens: TokenBudget | None = None,
) -> PreparedImage:
    """Decode, orient, optionally crop, convert to RGB and resize an uploaded image.

    Accepts JPEG, PNG, WebP, GIF (first frame), BMP, TIFF (first page), and
    HEIC/HEIF when pillow-heif is installed. Raises ``ImageTooLargeError`` for
    files over the byte, pixel or frame limits of ``options`` (checked before
    decoding) and ``ImageError`` for anything that is not a readable image or is
    longer and thinner than Qwen accepts (aspect ratio over 200).

    The result is sized by Qwen's ``smart_resize`` within ``tokens`` (default:
    ``options.tokens``), so llama.cpp's mtmd keeps it as it is; its ``geometry``
    records what was done, for mapping the model's coordinates back to the photo.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)  # no copy when it already is bytes
    if not data:
        raise ImageError("image data is empty")
    budget = tokens or options.tokens
    try:
        with open_checked(data, options) as source:
            check_aspect_ratio(source.width, source.height)  # before any pixel is decoded
            stored = source.size
            if crop is None and source.format in ("JPEG", "MPO"):
                # Both rules are symmetric in width and height, so the target in the
                # file's orientation is known before its EXIF orientation is read.
                target = _target(stored, options, budget, zoom=False)
                if target[0] < stored[0] and target[1] < stored[1]:
                    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is
                    # still at least the target size: faster, and a fraction of the memory.
                    source.draft(None, target)
            decode_pixels(source)
            image, orientation = _upright(source)
            upright = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
            if crop is not None:
                region = crop.box(*upright)  # no draft with a crop: decoded == stored
                image = image.crop(region)
            else:
                region = (0, 0, *upright)
            target = _target((region[2] - region[0], region[3] - region[1]), options, budget,
                             zoom=crop is not None)
            rgb = to_rgb(image)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.LANCZOS,
                                 reducing_gap=3.0 if target[0] < rgb.width else None)
            geometry = ImageGeometry(stored, orientation, region, target)
            return PreparedImage.from_rgb(rgb.tobytes(), rgb.width, rgb.height, geometry)
    except MemoryError as exc:
        raise ImageTooLargeError("image is too large to decode in the memory available") from exc


def _target(size: tuple[int, int], options: ImageOptions, budget: TokenBudget,
            zoom: bool) -> tuple[int, int]:
    """The one size the picture is resized to: Qwen's ``smart_resize`` within ``budget``
    of the picture with its longest edge capped at ``max_edge`` (a zoom is enlarged to
    it). The capped size is kept exact (not rounded to pixels), so the cap never changes
    the aspect ratio the rule sees: a 3200 x 16 strip stays at ratio 200, not 204.8."""
    check_aspect_ratio(*size)
    width, height = size
    longest = max(width, height)
    scale = 1.0
    if longest > options.max_edge or (longest < options.max_edge and (zoom or options.upscale)):
        scale = options.max_edge / longest
    min_pixels, max_pixels = budget.pixel_bounds(FACTOR)
    return smart_resize(width * scale, height * scale, min_pixels=min_pixels,
                        max_pixels=max_pixels)


def _upright(im: Image.Image) -> tuple[Image.Image, int]:
    """Apply the EXIF (or XMP) Orientation tag, so the picture is upright; and which it was."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im), orientation
    except DECODE_ERRORS:
        # Unreadable EXIF is common in real photos; keep the pixels as stored
        # rather than refuse a picture the model can still look at.
        pass
    return im, 1

"""The image pipeline: untrusted bytes in, a ``PreparedImage`` (and its token count) out.

Modules, each calling only those below it:

- ``sources``: a file or a ``data:`` URI to bytes, size-checked before reading;
- ``prepare``: the pipeline (header, decode, EXIF, crop, RGB, resize);
- ``crop``: the zoom region, plain geometry;
- ``formats``: the accepted formats, opening them with Pillow, Pillow's errors as ours;
- ``containers``: GIF/TIFF frame walkers and the HEIF sniff, on raw bytes;
- ``limits``: byte, pixel and frame limits, checked before decoding;
- ``modes``: any colour mode to 8-bit RGB;
- ``tokens``: how many vision tokens llama.cpp's mtmd gives an image.
"""

from vlmserve.images.crop import CropRegion
from vlmserve.images.prepare import prepare_image
from vlmserve.images.sources import decode_data_uri, load_image_file, read_image_bytes
from vlmserve.images.tokens import image_grid, image_token_count

__all__ = [
    "CropRegion",
    "decode_data_uri",
    "image_grid",
    "image_token_count",
    "load_image_file",
    "prepare_image",
    "read_image_bytes",
]

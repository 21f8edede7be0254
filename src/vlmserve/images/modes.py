"""Turn a decoded Pillow image of any mode into 8-bit RGB.

The vision encoder takes 8-bit RGB. Pillow's own ``convert("RGB")`` is right
for most modes but not for all: it drops alpha onto black (transparent
screenshots and logos become black rectangles), and it clips 16-bit and
32-bit greys at 255 instead of scaling them (a 16-bit mid-grey becomes white).
Those cases are handled here; the rest go to Pillow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlmserve.errors import ImageError

WHITE = (255, 255, 255)

# Modes with an alpha channel (premultiplied ones included: convert("RGBA")
# un-premultiplies them).
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Modes that may carry one transparent colour or palette entries in info["transparency"].
_TRANSPARENCY_MODES = frozenset({"P", "L", "RGB", "1"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def to_rgb(im: Image.Image) -> Image.Image:
    """Return ``im`` as an 8-bit RGB image; transparency is composited over white.

    - alpha modes and palette/grey images with a transparent colour: over white,
      because transparent regions of documents and screenshots are meant as paper;
    - 16-bit greys (``I;16*``) and ``I`` (how Pillow holds 16-bit PNG/TIFF greys):
      scaled from 0..65535 to 0..255, not clipped;
    - ``F`` (float greys): 0..1 data scaled by 255, anything else stretched from
      its min..max, because float images have no agreed white;
    - everything else (L, 1, P, CMYK, YCbCr, ...): Pillow's conversion.
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _ALPHA_MODES or (mode in _TRANSPARENCY_MODES and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, (0, 0), rgba)  # the RGBA image is its own mask: alpha blending
        return canvas
    if mode in _WIDE_GREY_MODES:
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        grey = (wide * 255 + 32767) // 65535  # round(v * 255 / 65535); fits in uint32
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_u8(np.asarray(im, dtype=np.float32))).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as exc:  # e.g. LAB or HSV, which Pillow cannot convert to RGB directly
        raise ImageError(f"unsupported colour mode {mode}") from exc


def _float_to_u8(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo = float(values[finite].min())
    hi = float(values[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:  # a flat image outside 0..1: keep its value as an 8-bit level
        scaled = np.clip(values, 0.0, 255.0)
    scaled = np.where(finite, scaled, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

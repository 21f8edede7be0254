"""Boxes drawn on the photo: what a person wants to see from a grounding answer.

Boxes come from ``vlmserve.grounding.boxes_for`` in the upright photo's pixels, so they
are drawn on the upright photo (EXIF orientation applied, no crop, no resize), with
their labels, in a few alternating colours. A large photo is drawn at most
``max_edge`` px on its longest side (the page shows it that size anyway).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from vlmserve.errors import ImageError
from vlmserve.images.formats import DECODE_ERRORS, decode_pixels, open_header
from vlmserve.images.modes import to_rgb

COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60))
# Fonts with Chinese glyphs first (labels are often Chinese), then a plain one.
_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


@lru_cache(maxsize=8)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font for labels (a CJK one when the system has it); cached per size."""
    for path in _FONT_FILES:
        if Path(path).is_file():
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
    return ImageFont.load_default(size)


def upright_photo(data: bytes) -> Image.Image:
    """The photo as a person sees it: decoded, EXIF orientation applied, 8-bit RGB."""
    try:
        with open_header(data) as source:
            decode_pixels(source)
            try:
                image = ImageOps.exif_transpose(source)
            except DECODE_ERRORS:  # unreadable EXIF: as stored, as prepare_image does
                image = source.copy()
            return to_rgb(image)
    except MemoryError as exc:
        raise ImageError("image is too large to draw on") from exc


def draw_boxes(photo: Image.Image, boxes: Sequence[dict[str, Any]],
               max_edge: int = 1600) -> Image.Image:
    """A copy of the upright ``photo`` with every box (``bbox``) and point (``point``)
    of ``boxes`` drawn and labelled; scaled down to ``max_edge`` first when larger."""
    scale = min(1.0, max_edge / max(photo.size))
    out = photo.convert("RGB")
    if scale < 1.0:
        out = out.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))),
                         Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 300))
    font = label_font(max(12, round(max(out.size) / 45)))
    for i, box in enumerate(boxes):
        colour = COLOURS[i % len(COLOURS)]
        label = str(box.get("label") or "")
        if "bbox" in box:
            x1, y1, x2, y2 = (v * scale for v in box["bbox"])
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
            anchor = (x1, y1)
        elif "point" in box:
            x, y = (v * scale for v in box["point"])
            r = line * 3
            draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=line)
            draw.ellipse((x - line, y - line, x + line, y + line), fill=colour)
            anchor = (x + r, y - r)
        else:
            continue
        if label:
            _label(draw, anchor, label, colour, font, out.size)
    return out


def _label(draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str,
           colour: tuple[int, int, int], font: Any, size: tuple[int, int]) -> None:
    """The label on a filled tag just above ``at`` (below it at the top edge)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 8, bottom - top + 6
    x = min(max(0.0, at[0]), max(0.0, size[0] - w))
    y = at[1] - h if at[1] - h >= 0 else at[1]
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + 4 - left, y + 3 - top), text, fill=(255, 255, 255), font=font)


def annotated_png(data: bytes, boxes: Sequence[dict[str, Any]], max_edge: int = 1600) -> bytes:
    """The photo in ``data`` with ``boxes`` drawn, as PNG bytes."""
    buf = io.BytesIO()
    draw_boxes(upright_photo(data), boxes, max_edge).save(buf, "PNG")
    return buf.getvalue()

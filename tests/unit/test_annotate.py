"""Boxes drawn on the photo (Pillow), at the pixels grounding mapped them to."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.unit.test_images import encode, stored_as
from vlmserve.annotate import annotated_png, draw_boxes, upright_photo


def test_box_outline_is_drawn_at_its_pixels_with_a_label():
    photo = Image.new("RGB", (800, 600), (128, 128, 128))
    out = np.asarray(draw_boxes(photo, [{"label": "猫", "bbox": [200, 150, 400, 300]}]))
    colour = out[225, 200]  # left edge, below the label tag
    assert tuple(colour) != (128, 128, 128)
    assert tuple(out[225, 400]) == tuple(colour)  # right edge, same colour
    assert tuple(out[225, 300]) == (128, 128, 128)  # inside untouched
    assert (out[120:150, 200:260] != 128).any()  # the label tag above the box


def test_points_and_garbage_records_do_not_fail():
    photo = Image.new("RGB", (100, 100), (0, 0, 0))
    out = draw_boxes(photo, [{"label": "p", "point": [50, 50]}, {"label": "no coords"}])
    assert np.asarray(out)[50, 50].any()


def test_upright_photo_applies_exif_and_large_photos_are_drawn_smaller():
    card = np.zeros((60, 80, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(np.ascontiguousarray(stored_as(card, 6))), "PNG",
                  exif=exif.tobytes())
    assert upright_photo(data).size == (80, 60)
    big = encode(Image.new("RGB", (4000, 3000)), "JPEG")
    with Image.open(__import__("io").BytesIO(annotated_png(big, []))) as drawn:
        assert drawn.size == (1600, 1200)

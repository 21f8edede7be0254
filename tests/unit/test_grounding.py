"""Qwen3-VL's boxes: parsed from given model outputs, mapped to exact photo pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.unit.test_images import encode, stored_as
from vlmserve.config import ImageOptions
from vlmserve.grounding import boxes_for, parse_boxes, upright_to_stored
from vlmserve.images import CropRegion, prepare_image
from vlmserve.types import ImageGeometry


def test_fenced_list_with_boxes_and_points():
    text = ('Here they are:\n```json\n[\n  {"bbox_2d": [100, 200, 300, 400], "label": "cat"},\n'
            '  {"point_2d": [500, 500], "label": "眼睛"}\n]\n```')
    boxes = parse_boxes(text)
    assert [(b.label, b.grid) for b in boxes] == [
        ("cat", (100.0, 200.0, 300.0, 400.0)), ("眼睛", (500.0, 500.0))]
    assert boxes[1].is_point


def test_bare_json_single_object_swapped_corners_and_clamping():
    assert parse_boxes('{"bbox_2d": [300, 400, 100, 200], "label": "x"}')[0].grid == (
        100.0, 200.0, 300.0, 400.0)
    assert parse_boxes('[{"bbox_2d": [-5, 10, 1200, 990.5]}]')[0].grid == (
        0.0, 10.0, 1000.0, 990.5)


def test_truncated_and_prose_wrapped_answers_keep_the_complete_items():
    text = ('I see [{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], '
            '"label": "b"}, {"bbox_2d": [9, 10')  # cut off by max_tokens
    assert [b.label for b in parse_boxes(text)] == ["a", "b"]


@pytest.mark.parametrize("text", [
    "", "no boxes here", "```json\n[1, 2, 3]\n```", '[{"bbox_2d": [1, 2, 3]}]',
    '[{"bbox_2d": ["a", 2, 3, 4]}]', '{"point_2d": [true, 2]}', "[" * 10_000,
    '[{"bbox_2d": [NaN, 1, 2, 3]}]', "\x00\xff garbage }{",
])
def test_unparseable_output_gives_no_boxes_never_an_error(text):
    assert parse_boxes(text) == []
    assert boxes_for(text, None) == []


def test_labels_are_one_line_and_bounded():
    box = parse_boxes(json.dumps([{"bbox_2d": [0, 0, 1, 1], "label": "a\n b" + "x" * 500}]))[0]
    assert box.label.startswith("a b") and len(box.label) == 80


def test_resize_cancels_out_exact_pixels_on_a_4000x3000_photo():
    data = encode(Image.new("RGB", (4000, 3000), (9, 9, 9)), "JPEG")
    p = prepare_image(data)
    assert (p.width, p.height) == (1024, 768)
    [record] = boxes_for('[{"bbox_2d": [250, 100, 500, 900], "label": "door"}]', p.geometry)
    assert record == {"label": "door", "bbox_2d": [250.0, 100.0, 500.0, 900.0],
                      "bbox": [1000.0, 300.0, 2000.0, 2700.0],
                      "bbox_stored": [1000.0, 300.0, 2000.0, 2700.0]}


def test_crop_zoom_maps_back_into_the_full_photo():
    data = encode(Image.new("RGB", (2000, 1000), (9, 9, 9)), "PNG")
    p = prepare_image(data, crop=CropRegion(0.25, 0.5, 0.5, 0.5))  # 1000 x 500 at (500, 500)
    assert p.geometry.crop_box == (500, 500, 1500, 1000)
    [box, point] = boxes_for('[{"bbox_2d": [0, 0, 1000, 1000], "label": "all"},'
                             ' {"point_2d": [500, 200], "label": "p"}]', p.geometry)
    assert box["bbox"] == [500.0, 500.0, 1500.0, 1000.0]
    assert point["point"] == [1000.0, 600.0]
    assert point["point_stored"] == [1000.0, 600.0]


def card_with_block() -> np.ndarray:
    """800 x 600 upright, grey, with a red block at x 200..400, y 150..300."""
    card = np.full((600, 800, 3), 128, dtype=np.uint8)
    card[150:300, 200:400] = (230, 20, 20)
    return card


@pytest.mark.parametrize("orientation", range(1, 9))
def test_rotated_photo_box_lands_on_the_block_upright_and_as_stored(orientation):
    stored = np.ascontiguousarray(stored_as(card_with_block(), orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "PNG", exif=exif.tobytes())
    p = prepare_image(data, ImageOptions())
    assert p.geometry.upright_size == (800, 600)
    # The block on the 0-1000 grid of the upright picture: x 250..500, y 250..500.
    [record] = boxes_for('[{"bbox_2d": [250, 250, 500, 500], "label": "red"}]', p.geometry)
    assert record["bbox"] == [200.0, 150.0, 400.0, 300.0]
    x1, y1, x2, y2 = (int(v) for v in record["bbox_stored"])
    red = np.argwhere((stored[:, :, 0] > 200) & (stored[:, :, 1] < 50))
    assert (x1, y1, x2, y2) == (red[:, 1].min(), red[:, 0].min(),
                                red[:, 1].max() + 1, red[:, 0].max() + 1)
    # and what the model saw: the block's centre in the prepared picture is red
    cx, cy = int(0.375 * p.width), int(0.375 * p.height)
    i = (cy * p.width + cx) * 3
    assert p.rgb[i] > 200 and p.rgb[i + 1] < 50


def test_stored_mapping_of_a_sideways_photo_exact_numbers():
    g = ImageGeometry(stored_size=(600, 800), orientation=6, crop_box=(0, 0, 800, 600),
                      size=(800, 608))
    assert g.upright_size == (800, 600)
    assert upright_to_stored(g, 200.0, 150.0) == (150.0, 600.0)
    assert upright_to_stored(g, 400.0, 300.0) == (300.0, 400.0)

"""Qwen3-VL's grounding answers: JSON boxes on a 0-1000 grid, mapped onto the photo.

Asked to locate things, Qwen3-VL answers with a JSON list such as
``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}, {"point_2d": [x, y], "label": "eye"}]``
(often inside a ```json fence), coordinates relative to the image it saw on a 0-1000
grid. That image is a crop of the upright photo, resized (``ImageGeometry``), so a grid
coordinate maps to the photo by the crop alone: ``left + g / 1000 * crop_width``; the
resize cancels out. ``stored`` coordinates undo the EXIF orientation as well, for tools
that read the file's pixel grid as stored.

Model output is untrusted text: anything unparseable gives fewer boxes (maybe none),
never an error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from vlmserve.types import ImageGeometry

GRID = 1000.0  # Qwen3-VL's relative coordinate grid
_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)
_OBJECT = re.compile(r"\{[^{}]*\}")  # one flat JSON object (Qwen's items have no nesting)
MAX_BOXES = 256  # a runaway answer cannot make a response (or a drawing) huge


@dataclass(frozen=True)
class Box:
    """One box or point the model gave, on its 0-1000 grid (points have x1 == x2)."""

    label: str
    grid: tuple[float, ...]  # (x1, y1, x2, y2) for a box, (x, y) for a point

    @property
    def is_point(self) -> bool:
        return len(self.grid) == 2

    def corners(self) -> tuple[float, float, float, float]:
        g = self.grid
        return (g[0], g[1], g[0], g[1]) if self.is_point else (g[0], g[1], g[2], g[3])


def parse_boxes(text: str) -> list[Box]:
    """The boxes and points in a model answer; ``[]`` when there are none or it is not JSON.

    Tries the fenced block (or the whole text) as JSON first; failing that (a truncated
    answer, prose around the list), every flat ``{...}`` object in the text on its own.
    """
    if not isinstance(text, str) or not text:
        return []
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    items: list[Any]
    try:
        parsed = json.loads(body)
        items = parsed if isinstance(parsed, list) else [parsed]
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        items = []
        for match in _OBJECT.finditer(body):
            try:
                items.append(json.loads(match.group(0)))
            except ValueError:
                continue
    boxes = [b for b in (_box(item) for item in items) if b is not None]
    return boxes[:MAX_BOXES]


def _box(item: Any) -> Box | None:
    if not isinstance(item, dict):
        return None
    label = item.get("label", "")
    label = label if isinstance(label, str) else str(label)
    label = " ".join(label.split())[:80]
    for key, n in (("bbox_2d", 4), ("point_2d", 2)):
        values = item.get(key)
        if (isinstance(values, list) and len(values) == n
                and all(isinstance(v, int | float) and not isinstance(v, bool)
                        and math.isfinite(v) for v in values)):
            v = [min(GRID, max(0.0, float(x))) for x in values]
            if n == 4:
                v = [min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]
            return Box(label, tuple(v))
    return None


def grid_to_upright(geometry: ImageGeometry, x: float, y: float) -> tuple[float, float]:
    """A 0-1000 grid point of the image the model saw -> pixels of the upright photo."""
    left, top, right, bottom = geometry.crop_box
    return left + x / GRID * (right - left), top + y / GRID * (bottom - top)


def upright_to_stored(geometry: ImageGeometry, x: float, y: float) -> tuple[float, float]:
    """Upright-photo pixels -> the file's pixels as stored (EXIF orientation undone).

    Coordinates are continuous (pixel edges), so a mirror maps x to ``width - x``.
    """
    w, h = geometry.upright_size
    return {
        1: (x, y),
        2: (w - x, y),  # mirrored left-right
        3: (w - x, h - y),  # rotated 180
        4: (x, h - y),  # mirrored top-bottom
        5: (y, x),  # transposed
        6: (y, w - x),  # stored rotated 90 counter-clockwise (camera turned right)
        7: (h - y, w - x),  # transversed
        8: (h - y, x),  # stored rotated 90 clockwise
    }[geometry.orientation]


def _rect(points: list[tuple[float, float]], is_point: bool) -> list[float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if is_point:
        return [round(xs[0], 2), round(ys[0], 2)]
    return [round(min(xs), 2), round(min(ys), 2), round(max(xs), 2), round(max(ys), 2)]


def box_record(box: Box, geometry: ImageGeometry | None) -> dict[str, Any]:
    """What the API returns for one box: the model's grid values and, when the image's
    geometry is known, the photo's pixels (upright, as a viewer shows it, and as stored)."""
    record: dict[str, Any] = {"label": box.label,
                              "point_2d" if box.is_point else "bbox_2d": list(box.grid)}
    if geometry is not None:
        x1, y1, x2, y2 = box.corners()
        upright = [grid_to_upright(geometry, x1, y1), grid_to_upright(geometry, x2, y2)]
        stored = [upright_to_stored(geometry, *p) for p in upright]
        key = "point" if box.is_point else "bbox"
        record[key] = _rect(upright, box.is_point)
        record[f"{key}_stored"] = _rect(stored, box.is_point)
    return record


def boxes_for(text: str, geometry: ImageGeometry | None) -> list[dict[str, Any]]:
    """Parse ``text`` and map every box onto the photo described by ``geometry``."""
    return [box_record(b, geometry) for b in parse_boxes(text)]

"""Shared fixtures: the tiny random-weight Qwen3-VL model, written once per test session."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from vlmserve.models.demo import DemoModelFiles, write_demo_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> DemoModelFiles:
    return write_demo_model(tmp_path_factory.mktemp("tiny-model"), size="tiny")


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A deterministic, non-uniform test picture (gradient + a coloured block)."""
    img = Image.new("RGB", (width, height))
    px = img.load()
    for y in range(0, height, max(1, height // 64)):
        for x in range(0, width, max(1, width // 64)):
            px[x, y] = ((x * 255 // width + seed * 40) % 256, (y * 255 // height) % 256,
                        (seed * 97) % 256)
    img.paste((200 - seed * 10 % 200, 30, 30), (width // 4, height // 4, width // 2, height // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def write_png(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("images")

    def _write(width: int, height: int, seed: int = 0, name: str | None = None) -> Path:
        path = folder / (name or f"img-{width}x{height}-{seed}.png")
        path.write_bytes(png_bytes(width, height, seed))
        return path

    return _write

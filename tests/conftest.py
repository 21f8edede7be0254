"""Shared fixtures: the tiny random-weight Qwen3-VL model, written once per test session."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from vlmserve.models.demo import DemoModelFiles, DemoShape, write_demo_model

# The smallest model llama.cpp runs with Qwen's real 151,936-token vocabulary: the two
# 151,936-row matrices dominate, so the hidden size is kept at 64 (~40 MB, ~3 s to write).
QWEN_TINY = DemoShape("qwen-tiny", n_embd=64, n_layer=4, n_head=2, n_head_kv=1, head_dim=32,
                      n_ff=128, rope_sections=(6, 5, 5, 0), v_embd=32, v_layer=4, v_head=2,
                      v_ff=64, v_deepstack=(1, 2, 3))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> DemoModelFiles:
    return write_demo_model(tmp_path_factory.mktemp("tiny-model"), size="tiny")


@pytest.fixture(scope="session")
def qwen_model(tmp_path_factory: pytest.TempPathFactory) -> DemoModelFiles:
    """A tiny model with the real Qwen vocabulary, written once per session.

    The vocabulary comes through the product's own lookup (its cache folder, else pip);
    where neither has it the tests that need it are skipped with the reason.
    """
    from vlmserve.models.qwen_vocab import VocabUnavailableError

    try:
        return write_demo_model(tmp_path_factory.mktemp("qwen-model"), size=QWEN_TINY,
                                vocab="qwen")
    except VocabUnavailableError as exc:
        pytest.skip(f"no Qwen vocabulary: {exc.message}")


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

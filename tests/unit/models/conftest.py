"""Fixtures for the model-management tests: fake GGUF pairs on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from ggufgen import write_mmproj_gguf, write_text_gguf


@pytest.fixture
def gguf_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A matching fake Qwen3-VL text model and mmproj."""
    return (
        write_text_gguf(tmp_path / "model.gguf"),
        write_mmproj_gguf(tmp_path / "mmproj.gguf"),
    )

"""Finding a model for `vlmserve serve` when none is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vlmserve.cli.model_lookup import find_model, resolve
from vlmserve.errors import ModelNotFoundError


def touch(path: Path, size: int = 1, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_newest_complete_folder_wins(tmp_path: Path) -> None:
    touch(tmp_path / "old" / "Qwen3VL-2B.gguf", mtime=1_000)
    touch(tmp_path / "old" / "mmproj-2B.gguf")
    model = touch(tmp_path / "new" / "Qwen3VL-8B-Q4_K_M.gguf", size=10, mtime=2_000)
    touch(tmp_path / "new" / "Qwen3VL-8B-Q8_0.gguf", size=5, mtime=2_000)
    mmproj = touch(tmp_path / "new" / "mmproj-8B-F16.gguf")
    touch(tmp_path / "incomplete" / "only-a-model.gguf", mtime=3_000)
    found = find_model(tmp_path)
    assert (found.model, found.mmproj) == (model, mmproj)  # the largest text GGUF


def test_nothing_found_says_how_to_get_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        find_model(tmp_path / "missing")
    assert "vlmserve pull" in info.value.message
    assert "vlmserve demo-model" in info.value.message


def test_mmproj_next_to_a_given_model(tmp_path: Path) -> None:
    model = touch(tmp_path / "m.gguf")
    mmproj = touch(tmp_path / "mmproj-m.gguf")
    assert resolve(model, None).mmproj == mmproj
    assert resolve(model, tmp_path / "other.gguf").mmproj == tmp_path / "other.gguf"

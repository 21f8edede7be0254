"""Log capture: every open capture sees every llama.cpp line; closing one mutes no other."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from vlmserve.engine.llamacpp.logs import LogCapture


def _load_broken(path: Path) -> None:
    """Ask llama.cpp itself to load ``path`` (it logs why it cannot, then returns NULL)."""
    params = llama_cpp.llama_model_default_params()
    assert not llama_cpp.llama_model_load_from_file(str(path).encode(), params)


@pytest.fixture
def broken(tmp_path: Path) -> tuple[Path, Path]:
    bad_magic = tmp_path / "bad-magic.gguf"
    bad_magic.write_bytes(b"not a gguf file")
    short_header = tmp_path / "short-header.gguf"
    short_header.write_bytes(b"GGUF\x00\x00\x00")
    return bad_magic, short_header


def test_a_second_capture_does_not_mute_the_first(broken) -> None:
    bad_magic, _ = broken
    first, second = LogCapture(), LogCapture()
    try:
        _load_broken(bad_magic)
        assert "invalid magic" in (first.last_error() or "")
        assert "invalid magic" in (second.last_error() or "")
        second.close()
        first.clear()
        _load_broken(bad_magic)
        assert "invalid magic" in (first.last_error() or "")  # still receiving lines
        second.close()  # idempotent
    finally:
        first.close()
        second.close()


def test_each_capture_names_its_own_failure(broken) -> None:
    bad_magic, short_header = broken
    first = LogCapture()
    try:
        first.clear()
        _load_broken(bad_magic)
        second = LogCapture()  # opened later, as the quantizer is while an engine runs
        try:
            second.clear()
            _load_broken(short_header)
            assert "invalid magic" in (first.last_error() or "")
            assert "header" in (second.last_error() or "")
            assert "magic" not in (second.last_error() or "")
        finally:
            second.close()
    finally:
        first.close()


def test_a_closed_capture_receives_nothing(broken) -> None:
    bad_magic, _ = broken
    capture = LogCapture()
    capture.close()
    _load_broken(bad_magic)
    assert capture.last_error() is None

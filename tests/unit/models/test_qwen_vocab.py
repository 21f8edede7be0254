"""Finding the Qwen vocabulary: the cache folder, an sdist in it, pip, and a clear error."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from ggufgen import write_text_gguf

from vlmserve.cli.main import main
from vlmserve.models.demo import SHAPES, write_text_header
from vlmserve.models.demo_tokenizer import build_vocabulary
from vlmserve.models.gguf_kv import read_tokenizer_arrays
from vlmserve.models.qwen_vocab import (
    SDIST_NAME,
    VOCAB_FILE,
    VocabUnavailableError,
    find_qwen_vocab_file,
    vocab_cache_dir,
)


def _fake_sdist(folder: Path, payload: bytes) -> Path:
    sdist = folder / f"{SDIST_NAME}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo(f"{SDIST_NAME}/vendor/llama.cpp/models/{VOCAB_FILE}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return sdist


def _no_pip(monkeypatch, tmp_path: Path) -> None:
    """pip with no index and an empty find-links folder: it fails fast, offline."""
    empty = tmp_path / "no-packages"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)


def test_cache_folder_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLMSERVE_VOCAB_CACHE", str(tmp_path / "v"))
    assert vocab_cache_dir() == tmp_path / "v"
    monkeypatch.delenv("VLMSERVE_VOCAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vocab_cache_dir() == tmp_path / "xdg" / "vlmserve" / "vocab"


def test_cached_file_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / VOCAB_FILE).write_bytes(b"cached")
    assert find_qwen_vocab_file(tmp_path).read_bytes() == b"cached"


def test_sdist_in_the_cache_is_extracted_without_pip(monkeypatch, tmp_path: Path) -> None:
    _no_pip(monkeypatch, tmp_path)
    _fake_sdist(tmp_path, b"vocab bytes")
    path = find_qwen_vocab_file(tmp_path)
    assert path == tmp_path / VOCAB_FILE and path.read_bytes() == b"vocab bytes"


def test_unreachable_vocabulary_is_one_error_line(monkeypatch, tmp_path: Path, capsys) -> None:
    _no_pip(monkeypatch, tmp_path)
    monkeypatch.setenv("VLMSERVE_VOCAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(VocabUnavailableError, match="pip could not fetch"):
        find_qwen_vocab_file()
    assert main(["demo-model", str(tmp_path / "out"), "--vocab", "qwen"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("vlmserve: error: the Qwen vocabulary") and "pip" in line
    assert not (tmp_path / "out" / "model.gguf").exists()


def test_sdist_without_the_file_is_a_clear_error(tmp_path: Path) -> None:
    sdist = tmp_path / f"{SDIST_NAME}.tar.gz"
    with tarfile.open(sdist, "w:gz"):
        pass
    with pytest.raises(VocabUnavailableError, match="has no readable"):
        find_qwen_vocab_file(tmp_path)
    assert not (tmp_path / VOCAB_FILE).exists()


def test_tokenizer_arrays_read_back_what_was_written(tmp_path: Path) -> None:
    shape = SHAPES["tiny"]
    written = build_vocabulary(shape.n_merges)
    tokens, types, merges = read_tokenizer_arrays(write_text_header(tmp_path / "m.gguf", shape))
    assert (tuple(tokens), tuple(types), tuple(merges)) == (
        written.tokens, written.token_types, written.merges)
    with pytest.raises(ValueError, match="no tokenizer.ggml.token_type"):
        read_tokenizer_arrays(write_text_gguf(tmp_path / "t.gguf", n_vocab=100))
    (tmp_path / "x.gguf").write_bytes(b"<html>")
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_tokenizer_arrays(tmp_path / "x.gguf")

"""The local models folder: listing, default, resolve, remove."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf.constants import LlamaFileType
from ggufgen import write_text_gguf

from vlmserve.errors import ModelNotFoundError
from vlmserve.models.registry import (
    MANIFEST_NAME,
    ModelRegistry,
    default_models_dir,
    pick_mmproj,
    quant_from_name,
    quant_in_name,
    write_manifest,
)


def _model(root: Path, folder: str, *files: str, size: int = 10) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"x" * size)
    return d


def test_default_models_dir() -> None:
    assert default_models_dir({"VLMSERVE_HOME": "/srv/vlm"}) == Path("/srv/vlm/models")
    assert default_models_dir({}) == Path.home() / ".cache" / "vlmserve" / "models"


def test_quant_names() -> None:
    assert quant_from_name("Qwen3VL-8B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_from_name("Qwen3-VL-8B-Instruct-UD-Q4_K_XL.gguf") == "Q4_K_XL"
    assert quant_from_name("qwen3vl-8b-instruct-q8_0-00001-of-00002.gguf") == "Q8_0"
    assert quant_from_name("model-f16.gguf") == "F16"
    assert quant_from_name("model-BF16.gguf") == "BF16"
    assert quant_from_name("Qwen3VL-8B-Instruct.gguf") is None
    assert quant_in_name("q4_k_m", "Qwen3VL-8B-Instruct-Q4_K_M.gguf")
    assert not quant_in_name("F16", "Qwen3VL-8B-Instruct-BF16.gguf")
    assert not quant_in_name("Q4_K", "Qwen3VL-8B-Instruct-Q4_K_M.gguf")
    assert pick_mmproj(["mmproj-X-Q8_0.gguf", "mmproj-X-F16.gguf", "X-Q4_K_M.gguf"]) == (
        "mmproj-X-F16.gguf"
    )
    assert pick_mmproj(["mmproj-X-Q8_0.gguf"]) == "mmproj-X-Q8_0.gguf"
    assert pick_mmproj(["X-Q4_K_M.gguf"]) is None


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    for reg in (ModelRegistry(tmp_path / "missing"), ModelRegistry(tmp_path)):
        assert reg.list_models() == []
        with pytest.raises(ModelNotFoundError, match="no model in .*run `vlmserve pull`"):
            reg.default_model()


def test_list_models(tmp_path: Path) -> None:
    _model(tmp_path, "b-q8", "B-Q8_0.gguf", "mmproj-B-F16.gguf", "mmproj-B-Q8_0.gguf", size=100)
    _model(tmp_path, "a-q4", "A-Q4_K_M.gguf", "mmproj-A-F16.gguf")
    _model(tmp_path, "no-mmproj", "C-Q5_K_S.gguf")
    _model(tmp_path, "not-a-model", "README.md")
    _model(tmp_path, ".partial-d", "D-Q4_K_M.gguf", "mmproj-D-F16.gguf")
    reg = ModelRegistry(tmp_path)
    entries = reg.list_models()
    assert [e.name for e in entries] == ["a-q4", "b-q8", "no-mmproj"]
    a, b, c = entries
    assert a.quant == "Q4_K_M" and a.mmproj_path == tmp_path / "a-q4" / "mmproj-A-F16.gguf"
    assert a.model_path == tmp_path / "a-q4" / "A-Q4_K_M.gguf" and a.size_bytes == 20
    assert b.quant == "Q8_0" and b.mmproj_path.name == "mmproj-B-F16.gguf"
    assert b.size_bytes == 200  # model + the chosen mmproj, not the other one
    assert c.mmproj_path is None and not c.complete
    assert not any(e.is_default for e in entries)
    assert reg.default_model().name == "a-q4"  # first complete one by name
    assert reg.partial_downloads() == [tmp_path / ".partial-d"]


def test_manifest_roles_and_default_flag(tmp_path: Path) -> None:
    _model(tmp_path, "a", "A-Q4_K_M.gguf", "mmproj-A-F16.gguf")
    b = _model(tmp_path, "b", "weights.gguf", "mmproj-one.gguf", "mmproj-two.gguf")
    write_manifest(
        b,
        {
            "format": 1,
            "repo": "Qwen/Qwen3-VL-8B-Instruct-GGUF",
            "revision": "a" * 40,
            "source": "hf",
            "quant": "Q8_0",
            "model_file": "weights.gguf",
            "mmproj_file": "mmproj-two.gguf",
            "default": True,
            "files": [],
        },
    )
    reg = ModelRegistry(tmp_path)
    e = reg.get("b")
    assert e.quant == "Q8_0" and e.mmproj_path.name == "mmproj-two.gguf"
    assert e.repo == "Qwen/Qwen3-VL-8B-Instruct-GGUF" and e.source == "hf" and e.is_default
    assert reg.default_model().name == "b"
    # set_default moves the flag, creating a manifest for the hand-copied model
    reg.set_default("a")
    assert reg.default_model().name == "a"
    assert json.loads((tmp_path / "a" / MANIFEST_NAME).read_text())["default"] is True
    assert json.loads((b / MANIFEST_NAME).read_text())["default"] is False


def test_quant_from_header_when_the_name_has_none(tmp_path: Path) -> None:
    d = tmp_path / "handmade"
    d.mkdir()
    write_text_gguf(d / "model.gguf", file_type=LlamaFileType.MOSTLY_Q5_K_S)
    assert ModelRegistry(tmp_path).get("handmade").quant == "Q5_K_S"


def test_split_model(tmp_path: Path) -> None:
    _model(
        tmp_path,
        "big",
        "X-F16-00001-of-00002.gguf",
        "X-F16-00002-of-00002.gguf",
        "mmproj-X-F16.gguf",
    )
    e = ModelRegistry(tmp_path).get("big")
    assert e.model_path.name == "X-F16-00001-of-00002.gguf"
    assert e.quant == "F16" and e.size_bytes == 30 and e.note is None


def test_several_text_models_in_one_folder_are_noted(tmp_path: Path) -> None:
    _model(tmp_path, "mixed", "X-Q4_K_M.gguf", "X-Q8_0.gguf", "mmproj-X-F16.gguf")
    e = ModelRegistry(tmp_path).get("mixed")
    assert e.model_path.name == "X-Q4_K_M.gguf"
    assert "2 text GGUFs here" in (e.note or "")


def test_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _model(tmp_path, "Qwen-Q4", "Q-Q4_K_M.gguf", "mmproj-Q-Q8_0.gguf", "mmproj-Q-F16.gguf")
    _model(tmp_path, "lonely", "L-Q4_K_M.gguf")
    reg = ModelRegistry(tmp_path)
    want = (d / "Q-Q4_K_M.gguf", d / "mmproj-Q-F16.gguf")
    assert reg.resolve("Qwen-Q4") == want
    assert reg.resolve("qwen-q4") == want  # names are case-insensitive
    assert reg.resolve(str(d)) == want  # a folder
    assert reg.resolve(d / "Q-Q4_K_M.gguf") == want  # a file: mmproj found beside it
    assert reg.resolve(None) == want  # the default
    assert reg.resolve("Qwen-Q4/Q-Q4_K_M.gguf") == want  # relative to the models folder
    monkeypatch.chdir(tmp_path / "lonely")
    assert reg.resolve("L-Q4_K_M.gguf", require_mmproj=False) == (
        tmp_path / "lonely" / "L-Q4_K_M.gguf",
        None,
    )


def test_resolve_errors(tmp_path: Path) -> None:
    d = _model(tmp_path, "Qwen-Q4", "Q-Q4_K_M.gguf", "mmproj-Q-F16.gguf")
    _model(tmp_path, "lonely", "L-Q4_K_M.gguf")
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelNotFoundError) as ei:
        reg.resolve("qwen-q8")
    assert str(ei.value) == "unknown model 'qwen-q8'; installed: lonely, Qwen-Q4"
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        reg.resolve(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelNotFoundError, match="is a vision projector"):
        reg.resolve(d / "mmproj-Q-F16.gguf")
    with pytest.raises(ModelNotFoundError, match="lonely has no mmproj"):
        reg.resolve("lonely")
    with pytest.raises(ModelNotFoundError, match="no mmproj.*beside L-Q4_K_M.gguf"):
        reg.resolve(tmp_path / "lonely" / "L-Q4_K_M.gguf")


def test_remove(tmp_path: Path) -> None:
    _model(tmp_path, "a", "A-Q4_K_M.gguf", "mmproj-A-F16.gguf")
    _model(tmp_path, "b", "B-Q4_K_M.gguf", "mmproj-B-F16.gguf")
    reg = ModelRegistry(tmp_path)
    assert reg.remove("A") == (tmp_path / "a").resolve()
    assert not (tmp_path / "a").exists()
    assert [e.name for e in reg.list_models()] == ["b"]
    with pytest.raises(ModelNotFoundError, match="unknown model 'a'; installed: b"):
        reg.remove("a")

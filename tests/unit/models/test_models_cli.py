"""`vlmserve models` and `vlmserve info`, run through the real CLI entry point in process."""

from __future__ import annotations

import json
from pathlib import Path

from ggufgen import write_mmproj_gguf, write_text_gguf

from vlmserve.cli.main import main


def _install(models: Path, name: str, text_embd: int = 256) -> Path:
    d = models / name
    d.mkdir(parents=True)
    write_text_gguf(d / f"{name}-Q8_0.gguf", n_embd=256)
    write_mmproj_gguf(d / f"mmproj-{name}-F16.gguf", text_embd=text_embd)
    return d


def _err_line(err: str) -> str:
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("vlmserve: error:")]
    return line


def test_models_empty(tmp_path: Path, capsys) -> None:
    assert main(["models", "--dir", str(tmp_path)]) == 0
    assert f"no models in {tmp_path}" in capsys.readouterr().out


def test_models_table_rm_and_default(tmp_path: Path, capsys) -> None:
    _install(tmp_path, "alpha")
    _install(tmp_path, "beta")
    (tmp_path / ".partial-gamma").mkdir()
    assert main(["models", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "Q8_0" in out
    assert "mmproj-alpha-F16.gguf" in out
    assert "unfinished download" in out and ".partial-gamma" in out

    assert main(["models", "default", "beta", "--dir", str(tmp_path)]) == 0
    assert main(["models", "--dir", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["is_default"]) for e in listed] == [("alpha", False), ("beta", True)]

    assert main(["models", "--dir", str(tmp_path), "rm", "alpha"]) == 0
    assert not (tmp_path / "alpha").exists()
    assert "removed" in capsys.readouterr().err
    assert main(["models", "rm", "alpha", "--dir", str(tmp_path)]) == 1
    assert _err_line(capsys.readouterr().err) == (
        "vlmserve: error: unknown model 'alpha'; installed: beta"
    )


def test_info_text_and_json(tmp_path: Path, capsys) -> None:
    d = _install(tmp_path, "alpha")
    model = d / "alpha-Q8_0.gguf"
    assert main(["info", str(model), "--ctx", "2048", "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "architecture   qwen3vl" in out
    assert "quantization   F16" in out  # the header says F16; only the name says Q8_0
    assert "serve check: ok" in out
    assert "memory at 2048 tokens x 2 slots (4096 KV cells" in out
    assert "projector      qwen3vl_merger" in out  # the mmproj beside it was found

    args = ["--json", "--ctx", "1024", "--parallel", "1", "--image-cache-mb", "0"]
    assert main(["info", "alpha", "--dir", str(tmp_path), *args]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["architecture"] == "qwen3vl"
    assert data["mmproj"]["vision"]["projector_type"] == "qwen3vl_merger"
    assert data["ready_to_serve"] is True and data["problem"] is None
    # 4 layers * 1024 cells * (2 KV heads * 64 * 2 [K and V]) * 2 bytes
    assert data["memory"]["kv_bytes"] == 4 * 1024 * (2 * 64 * 2) * 2
    assert data["memory"]["total_bytes"] > data["memory"]["weights_bytes"]


def test_info_reports_a_mismatched_pair(tmp_path: Path, capsys) -> None:
    d = _install(tmp_path, "alpha", text_embd=128)
    assert main(["info", str(d / "alpha-Q8_0.gguf"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ready_to_serve"] is False
    assert "does not belong to alpha-Q8_0.gguf" in data["problem"]


def test_info_on_an_mmproj_alone(tmp_path: Path, capsys) -> None:
    p = write_mmproj_gguf(tmp_path / "mmproj-x.gguf")
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "architecture   clip" in out and "PROBLEM: this is a vision projector" in out


def test_info_bad_files_exit_1(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    assert main(["info", str(junk)]) == 1
    assert "junk.gguf is not a GGUF file" in _err_line(capsys.readouterr().err)
    assert main(["info", str(tmp_path / "missing.gguf")]) == 1
    assert "no such file" in _err_line(capsys.readouterr().err)

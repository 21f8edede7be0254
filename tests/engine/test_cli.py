"""`vlmserve demo-model`, `describe` and `quantize` as a user runs them (subprocesses)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlmserve.models import demo

CLI = [sys.executable, "-m", "vlmserve.cli.main"]


def vlmserve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    import tempfile

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLMSERVE_")}
    # an empty models folder: the user's own models must not change what the tests see
    full_env["VLMSERVE_HOME"] = tempfile.mkdtemp(prefix="vlmserve-home-")
    full_env.update(env or {})
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=full_env)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    res = vlmserve("demo-model", out)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def photo(write_png) -> Path:
    return write_png(640, 480, seed=2, name="photo.png")


def describe(demo_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return vlmserve("describe", "--model", demo_dir / "model.gguf", "--mmproj",
                    demo_dir / "mmproj.gguf", "--threads", "1", *args)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("vlmserve: error:")]
    assert len(lines) >= 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_describe_demo_model_is_deterministic(demo_dir, photo):
    first = describe(demo_dir, "--temperature", "0", "--max-tokens", "24", photo)
    second = describe(demo_dir, "--temperature", "0", "--max-tokens", "24", photo)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() and first.stdout == second.stdout


def test_describe_json_reports_the_figures(demo_dir, photo):
    res = describe(demo_dir, "--temperature", "0", "--max-tokens", "8", "--json", photo)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[-1])
    assert row["completion_tokens"] == 8 and row["finish_reason"] == "length"
    assert row["image_tokens"] == 300  # 640x480 -> 20 x 15 blocks of 32 px
    assert row["prompt_tokens"] > row["image_tokens"]
    for key in ("ttft_ms", "image_encode_ms", "decode_tokens_per_s"):
        assert row[key] > 0


def test_describe_with_template_and_custom_prompt(demo_dir, photo):
    res = describe(demo_dir, "--temperature", "0", "--max-tokens", "4", "--json",
                   "--template", "ocr", photo)
    res2 = describe(demo_dir, "--temperature", "0", "--max-tokens", "4", "--json",
                    "--prompt", "What colour is the block?", photo)
    assert res.returncode == res2.returncode == 0
    a, b = (json.loads(r.stdout.splitlines()[-1]) for r in (res, res2))
    assert a["prompt_tokens"] != b["prompt_tokens"]


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
def test_quantized_demo_models_load_and_generate(tmp_path, photo, qtype):
    res = vlmserve("demo-model", tmp_path, "--quant", qtype)
    assert res.returncode == 0, res.stderr
    out = describe(tmp_path, "--temperature", "0", "--max-tokens", "8", "--json", photo)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["completion_tokens"] == 8
    f16_size = 5_600_000  # the tiny F16 text model is ~5.7 MB
    assert (tmp_path / "model.gguf").stat().st_size < f16_size


def test_no_model_says_how_to_get_one(photo):
    res = vlmserve("describe", photo)
    assert_one_line_error(res, "vlmserve pull", "vlmserve demo-model")


def test_missing_model_file(demo_dir, photo, tmp_path):
    res = vlmserve("describe", "--model", tmp_path / "nope.gguf", photo)
    assert_one_line_error(res, "no such file", "nope.gguf")


def test_not_a_gguf_file(demo_dir, photo, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("this is not a model\n")
    res = vlmserve("describe", "--model", bad, "--mmproj", demo_dir / "mmproj.gguf", photo)
    assert_one_line_error(res, "GGUF")


def test_model_without_its_mmproj_is_named(photo, demo_dir, tmp_path):
    lone = tmp_path / "model.gguf"
    lone.write_bytes((demo_dir / "model.gguf").read_bytes())
    assert_one_line_error(vlmserve("describe", "--model", lone, photo), "mmproj")


@pytest.mark.parametrize("missing", ["v.patch_embd.bias", "v.patch_embd.weight.1"])
def test_mmproj_that_would_crash_llama_cpp_is_refused(demo_dir, photo, tmp_path, missing):
    """llama.cpp aborts/segfaults on these; the preflight must refuse them first."""
    from vlmserve.models.demo import SHAPES, write_demo_mmproj

    write_demo_mmproj(tmp_path / "mmproj.gguf", SHAPES["tiny"], omit_tensors=(missing,))
    res = vlmserve("describe", "--model", demo_dir / "model.gguf", "--mmproj",
                   tmp_path / "mmproj.gguf", photo)
    assert_one_line_error(res, missing)


def test_truncated_gguf(demo_dir, photo, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((demo_dir / "model.gguf").read_bytes()[:3_000_000])
    res = vlmserve("describe", "--model", cut, "--mmproj", demo_dir / "mmproj.gguf", photo)
    assert_one_line_error(res, "cut.gguf")
    assert "corrupt" in res.stderr or "truncated" in res.stderr or "bounds" in res.stderr


def test_mmproj_of_another_model(demo_dir, photo, tmp_path):
    other = dataclasses.replace(demo.SHAPES["tiny"], name="other", n_embd=128, head_dim=32,
                                rope_sections=(6, 5, 5, 0))
    demo._write_mmproj(tmp_path / "mmproj.gguf", other, seed=3)
    res = vlmserve("describe", "--model", demo_dir / "model.gguf", "--mmproj",
                   tmp_path / "mmproj.gguf", photo)
    assert_one_line_error(res, "mmproj")


def test_bad_images_and_empty_prompt(demo_dir, photo, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert_one_line_error(describe(demo_dir, text), "not an image")
    truncated = tmp_path / "half.png"
    truncated.write_bytes(photo.read_bytes()[:200])
    assert_one_line_error(describe(demo_dir, truncated), "half.png")
    assert_one_line_error(describe(demo_dir, "--prompt", "  ", photo), "prompt is empty")


def test_describe_grounding_json_and_draw(demo_dir, photo, tmp_path):
    out = tmp_path / "boxes.png"
    res = vlmserve("describe", "--model", demo_dir / "model.gguf", "--template", "grounding",
                   "--json", "--max-tokens", "8", "--temperature", "0", "--draw", out, photo)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[0])
    assert row["boxes"] == [] or all("bbox" in b or "point" in b for b in row["boxes"])
    assert row["image_tokens"] >= 960  # the grounding floor (1024, from 640 x 480: 32 x 30)
    from PIL import Image

    with Image.open(out) as drawn:
        assert drawn.size == (640, 480)  # the whole upright photo, not the model's crop
    assert "boxes drawn on" in res.stderr


def test_describe_draw_needs_a_writable_target(demo_dir, photo, tmp_path):
    res = vlmserve("describe", "--model", demo_dir / "model.gguf", "--draw",
                   tmp_path / "nowhere" / "x.png", photo)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("vlmserve: error: --draw")

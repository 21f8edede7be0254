"""``vlmserve describe DIR --output``: one line per image, errors as lines, CSV, refusal."""

from __future__ import annotations

import csv
import json

import pytest

from tests.batch.conftest import describe, make_broken, make_images, model_args, read_jsonl
from tests.conftest import png_bytes

pytestmark = pytest.mark.timeout(120)


def test_a_folder_gives_exactly_one_line_per_image_and_error_lines_for_broken_files(
        tiny_model, tmp_path, capsys):
    folder = tmp_path / "photos"
    good = make_images(folder, 50)
    broken = make_broken(folder)
    (folder / "readme.txt").write_text("not an image name: skipped")
    (folder / ".hidden.png").write_bytes(png_bytes(64, 64, seed=7))  # dotfiles: skipped
    (folder / "a" / "upload.png.part").write_bytes(b"partial")  # temp names: skipped
    out = tmp_path / "results.jsonl"

    rc = describe(str(folder), "--output", str(out), "--parallel", "4", "--max-tokens", "4",
                  "--temperature", "0", *model_args(tiny_model))

    assert rc == 1  # some images had an error, and every line was still written
    lines = read_jsonl(out)
    paths = [line["path"] for line in lines]
    assert sorted(paths) == sorted(str(p) for p in good + broken)  # each exactly once
    by_path = {line["path"]: line for line in lines}
    for path in broken:
        line = by_path[str(path)]
        assert line["error"] and str(path) in line["error"]
        assert line["answer"] is None and line["content_hash"] is None
        assert line["file_sha256"]  # readable bytes: a resume can still skip it
    for path in good:
        line = by_path[str(path)]
        assert line["error"] is None
        assert isinstance(line["answer"], str)
        assert line["finish_reason"] == "length" and line["completion_tokens"] == 4
        assert line["template"] == "describe_zh" and line["prompt"] == "请用中文描述这张图片"
        assert line["image_tokens"] > 0 and line["prompt_tokens"] > line["image_tokens"]
        assert line["ttft_ms"] > 0 and line["total_ms"] >= line["ttft_ms"]
        # 64 x 64 photos, enlarged by Qwen's rule to its 64-token floor: what the model saw
        assert len(line["content_hash"]) == 64 and (line["width"], line["height"]) == (256, 256)
    assert len({line["content_hash"] for line in lines if line["content_hash"]}) == 50
    err = capsys.readouterr().err
    assert "52 lines written" in err and "2 errors" in err


def test_globs_recurse_and_keep_only_image_files(tiny_model, tmp_path):
    folder = tmp_path / "in"
    images = make_images(folder, 6)
    (folder / "a" / "x.txt").write_text("no")
    out = tmp_path / "r.jsonl"
    rc = describe(str(folder / "**" / "*.png"), str(images[0]), "-o", str(out),
                  "--parallel", "2", "--max-tokens", "2", *model_args(tiny_model))
    assert rc == 0
    assert sorted(line["path"] for line in read_jsonl(out)) == sorted(map(str, images))


def test_csv_output_has_a_header_and_one_row_per_image(tiny_model, tmp_path):
    folder = tmp_path / "in"
    images = make_images(folder, 5)
    broken = make_broken(folder)
    out = tmp_path / "results.csv"  # the format follows the extension
    rc = describe(str(folder), "--output", str(out), "--parallel", "2", "--max-tokens", "4",
                  *model_args(tiny_model))
    assert rc == 1
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert out.read_text(encoding="utf-8").startswith("path,file_sha256,content_hash,")
    assert sorted(r["path"] for r in rows) == sorted(map(str, images + broken))
    assert all(r["error"] for r in rows if r["path"] in map(str, broken))
    assert all(not r["error"] and r["completion_tokens"] == "4" for r in rows
               if r["path"] in map(str, images))


def test_an_existing_results_file_is_refused_without_resume(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    make_images(folder, 2)
    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "earlier run"}\n')
    rc = describe(str(folder), "-o", str(out), "--max-tokens", "2", *model_args(tiny_model))
    assert rc == 1
    assert "--resume" in capsys.readouterr().err
    assert out.read_text() == '{"path": "earlier run"}\n'  # untouched


def test_plain_files_without_output_still_stream_or_print_json(tiny_model, tmp_path, capsys):
    images = make_images(tmp_path, 2)
    args = [*map(str, images), "--max-tokens", "3", "--temperature", "0", *model_args(tiny_model)]
    assert describe(*args) == 0
    out = capsys.readouterr().out
    assert f"### {images[0]}" in out and f"### {images[1]}" in out
    assert describe(*args, "--json") == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["image"] for o in objs] == list(map(str, images))
    assert all(o["completion_tokens"] == 3 for o in objs)

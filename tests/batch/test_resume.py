"""Interrupt a batch (SIGINT, SIGKILL) and resume it: every image ends up exactly once."""

from __future__ import annotations

import json
import signal

import pytest

from tests.batch.conftest import (
    cli,
    count_lines,
    describe,
    make_broken,
    make_images,
    model_args,
    read_jsonl,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

N_IMAGES = 40


def start_slow_run(tiny_model, folder, out):
    """A run long enough to be interrupted midway: many tokens per image, 2 in flight."""
    return cli("describe", str(folder), "--output", str(out), "--parallel", "2",
               "--max-tokens", "200", *model_args(tiny_model))


def interrupt_after_some_lines(proc, out, sig):
    wait_for(lambda: count_lines(out) >= 3 or proc.poll() is not None, what="first lines")
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def finish_with_resume(tiny_model, folder, out, expected):
    rc = describe(str(folder), "--output", str(out), "--parallel", "2", "--max-tokens", "4",
                  "--resume", *model_args(tiny_model))
    assert rc == 1  # the broken files' lines (one each) are errors
    paths = [line["path"] for line in read_jsonl(out)]
    assert sorted(paths) == sorted(map(str, expected))  # every image exactly once


def test_ctrl_c_stops_cleanly_and_resume_finishes(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    images = make_images(folder, N_IMAGES) + make_broken(folder)
    out = tmp_path / "r.jsonl"
    rc, stderr = interrupt_after_some_lines(start_slow_run(tiny_model, folder, out), out,
                                            signal.SIGINT)
    assert rc == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "--resume" in stderr
    lines = read_jsonl(out)  # complete lines only
    assert 3 <= len(lines) < len(images)
    assert len({line["path"] for line in lines}) == len(lines)
    assert all(line["finish_reason"] != "abort" for line in lines)

    finish_with_resume(tiny_model, folder, out, images)
    assert f"{len(lines)} already there" in capsys.readouterr().err


def test_sigkill_then_resume_repairs_a_partial_last_line(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    images = make_images(folder, N_IMAGES) + make_broken(folder)
    out = tmp_path / "r.jsonl"
    rc, _ = interrupt_after_some_lines(start_slow_run(tiny_model, folder, out), out,
                                       signal.SIGKILL)
    assert rc == -signal.SIGKILL
    # A kill in the middle of a write leaves half a line; make sure that case is there.
    done = out.read_bytes().count(b"\n")
    with out.open("ab") as f:
        f.write(json.dumps({"path": str(images[-1]), "answer": "cut sho"}).encode()[:30])

    finish_with_resume(tiny_model, folder, out, images)
    assert "cut a partial last line" in capsys.readouterr().err
    assert done >= 3


def test_resume_skips_by_content_when_the_folder_moved(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    make_images(folder, 4)
    out = tmp_path / "r.jsonl"
    assert describe(str(folder), "-o", str(out), "--max-tokens", "2",
                    *model_args(tiny_model)) == 0
    moved = folder.rename(tmp_path / "moved")
    assert describe(str(moved), "-o", str(out), "--max-tokens", "2", "--resume",
                    *model_args(tiny_model)) == 0
    assert len(read_jsonl(out)) == 4
    assert "4 already there" in capsys.readouterr().err
    # another question is another task: the same images are described again
    assert describe(str(moved), "-o", str(out), "--max-tokens", "2", "--resume",
                    "--prompt", "What is this?", *model_args(tiny_model)) == 0
    assert len(read_jsonl(out)) == 8

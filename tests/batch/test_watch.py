"""``vlmserve watch``: new images once complete, each picture once, clean SIGTERM."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.batch.conftest import cli, count_lines, model_args, read_jsonl, wait_for
from tests.conftest import png_bytes
from vlmserve.batch.watch import FolderPoller

pytestmark = pytest.mark.timeout(180)


def start_watch(tiny_model, folder, out, *flags):
    proc = cli("watch", str(folder), "--output", str(out), "--interval", "0.2",
               "--parallel", "2", "--max-tokens", "4", *flags, *model_args(tiny_model))
    return proc


def stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "watch stopped" in stderr
    return stderr


def wait_started(proc, out, folder):
    """The watcher has polled at least twice: a probe image already present got its line."""
    wait_for(lambda: count_lines(out) >= 1 or proc.poll() is not None, what="the probe line")
    assert proc.poll() is None, proc.communicate()[1]


def test_watch_describes_each_new_image_once_and_only_when_complete(tiny_model, tmp_path):
    folder, out = tmp_path / "drop", tmp_path / "w.jsonl"
    folder.mkdir()
    probe = folder / "probe.png"  # present at start: processed too (no --new-only)
    probe.write_bytes(png_bytes(64, 64, seed=1))
    proc = start_watch(tiny_model, folder, out)
    try:
        wait_started(proc, out, folder)

        # 1. written under a temporary name, then renamed (the usual safe writer)
        part = folder / "renamed.png.part"
        part.write_bytes(png_bytes(64, 64, seed=2))
        (folder / ".hidden.png").write_bytes(png_bytes(64, 64, seed=3))
        (folder / "~lock.png").write_bytes(png_bytes(64, 64, seed=4))
        time.sleep(0.6)  # several polls: temporary and hidden names are never taken
        part.rename(folder / "renamed.png")

        # 2. written slowly: half, a pause of many polls, then the rest
        slow = folder / "sub" / "slow.png"
        slow.parent.mkdir()
        data = png_bytes(96, 96, seed=5)
        with slow.open("wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            wait_for(lambda: "renamed.png" in out.read_text(), what="renamed.png")
            time.sleep(1.5)  # the half file looks stable, but must not be taken: no decode
            assert "slow.png" not in out.read_text()
            f.write(data[len(data) // 2:])
        wait_for(lambda: "slow.png" in out.read_text(), what="slow.png")

        # 3. a copy of a picture already described, under a new name: skipped
        shutil.copy(probe, folder / "sub" / "probe-copy.png")
        time.sleep(1.0)
    finally:
        stderr = stop(proc)

    lines = read_jsonl(out)
    assert sorted(line["path"] for line in lines) == sorted(
        str(folder / name) for name in ("probe.png", "renamed.png", "sub/slow.png"))
    assert all(line["error"] is None for line in lines)
    assert "1 already described" in stderr

    # A restart with the same output file describes nothing again; a new image it does.
    proc = start_watch(tiny_model, folder, out)
    try:
        (folder / "new.png").write_bytes(png_bytes(64, 64, seed=6))
        wait_for(lambda: "new.png" in out.read_text() or proc.poll() is not None,
                 what="new.png after restart")
    finally:
        stop(proc)
    assert [line["path"] for line in read_jsonl(out)][3:] == [str(folder / "new.png")]


def test_new_only_skips_what_is_already_there(tiny_model, tmp_path):
    folder, out = tmp_path / "drop", tmp_path / "w.jsonl"
    folder.mkdir()
    (folder / "old.png").write_bytes(png_bytes(64, 64, seed=1))
    proc = start_watch(tiny_model, folder, out, "--new-only")
    try:
        # the watcher says "watching" just before it notes what is already there: a file
        # written before that would count as old, however long the model took to load
        while "vlmserve: watching" not in (line := proc.stderr.readline()):
            assert line, "watch exited before it started watching"
        time.sleep(0.5)
        (folder / "fresh.png").write_bytes(png_bytes(64, 64, seed=2))
        wait_for(lambda: count_lines(out) >= 1 or proc.poll() is not None, what="fresh.png")
    finally:
        stop(proc)
    assert [line["path"] for line in read_jsonl(out)] == [str(folder / "fresh.png")]


def test_poller_needs_two_equal_polls_and_skips_temporary_names(tmp_path):
    poller = FolderPoller(tmp_path)
    img = tmp_path / "a.png"
    img.write_bytes(b"x" * 10)
    (tmp_path / "b.png.tmp").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / "empty.png").write_bytes(b"")
    assert poller.ready() == []  # first sight
    ready = poller.ready()
    assert [p for p, _ in ready] == [str(img)]  # unchanged since the last poll
    poller.handled(*ready[0])
    assert poller.ready() == []  # handled, unchanged
    with img.open("ab") as f:
        f.write(b"more")
    assert poller.ready() == []  # changed: wait for it to settle
    assert [p for p, _ in poller.ready()] == [str(img)]

"""``vlmserve watch --stream``: cameras served from 127.0.0.1 by the test, a real engine.

One run covers what a camera box lives through: two cameras on one engine, a static
scene (its repeats skipped), a camera that drops its connection (reopened), an alert per
described frame delivered to a webhook that fails each alert's first try (retried, then
delivered exactly once), and Ctrl-C (whole lines, exit 0).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.batch.conftest import cli, describe, model_args, read_jsonl, wait_for
from tests.video.clips import MjpegServer, write_clip

pytestmark = pytest.mark.timeout(120)

# The answer is forced by its grammar: {"violation": true}, whatever the random model says.
FORCED = {"type": "object", "properties": {"violation": {"type": "boolean", "enum": [True]}},
          "required": ["violation"]}


def lines_of(out):
    try:
        return read_jsonl(out)
    except (FileNotFoundError, json.JSONDecodeError):
        return []  # (a line is written whole; a read can only race the first open)


@pytest.mark.slow
def test_two_cameras_duplicates_a_drop_alerts_and_ctrl_c(tiny_model, tmp_path):
    # Camera a: scenes 0 then 1, then the connection closes; reopened, it shows scene 2.
    # Camera b: one scene, still, the whole time.
    cams = MjpegServer({"a": [[(0, 1.2), (1, 1.2)], [(2, 60.0)]], "b": [[(5, 60.0)]]})
    schema = tmp_path / "forced.json"
    schema.write_text(json.dumps(FORCED))
    out = tmp_path / "cams.jsonl"
    proc = cli("watch", "--stream", f"{cams.url}/cam/a", "--stream", f"{cams.url}/cam/b",
               "--every", "0.3", "--json-schema", str(schema), "--alert", "violation",
               "--webhook", f"{cams.url}/hook", "--temperature", "0", "--max-tokens", "16",
               "--output", str(out), "--parallel", "2", *model_args(tiny_model))
    try:
        def settled():
            lines = lines_of(out)
            a = [x for x in lines if x["stream"].endswith("/a")]
            reopened = any(x["connection"] >= 2 for x in a)
            return (reopened and any(x["stream"].endswith("/b") for x in lines)
                    and len(cams.delivered()) == len(lines))
        wait_for(lambda: settled() or proc.poll() is not None, 60, "both cameras and alerts")
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(1.0)  # more repeats of the still scenes: they must still be skipped
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        cams.close()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "watch stopped" in stderr

    lines = read_jsonl(out)  # whole lines only, after Ctrl-C too
    a = [x for x in lines if x["stream"].endswith("/a")]
    b = [x for x in lines if x["stream"].endswith("/b")]
    # One line per scene: every repeat of a scene was a near-duplicate.
    assert len(a) == 3 and len({x["content_hash"] for x in a}) == 3
    assert len(b) == 1
    assert "near-duplicates skipped" in stderr and " 0 near-duplicates" not in stderr
    # The drop: camera a was opened again, and its last scene came from the new connection.
    assert cams.connections["a"] >= 2 and a[-1]["connection"] >= 2
    assert "reopening" in stderr
    # Frames of both cameras went through one engine; each answer is the forced JSON.
    assert all(x["error"] is None and x["answer"] == {"violation": True} for x in lines)
    # Alerts: one per described frame, each delivered exactly once after one failed try.
    ids = [x["alert_id"] for x in lines]
    assert all(x["alert"] is True for x in lines) and len(set(ids)) == len(ids)
    delivered = [p["id"] for p in cams.delivered()]
    assert sorted(delivered) == sorted(ids)
    tries = [body["id"] for _, body in cams.posts]
    assert all(tries.count(i) == 2 for i in ids)  # a 500, then the delivery
    assert stderr.count("ALERT violation") == len(lines)
    assert all(p["answer"] == {"violation": True} and p["field"] == "violation"
               for p in cams.delivered())


def test_a_file_is_played_in_real_time_and_ends(tiny_model, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n_frames=20, rate=10)  # 2 s, every frame different
    out = tmp_path / "file.jsonl"
    started = time.monotonic()
    proc = cli("watch", "--stream", str(clip), "--every", "0.5", "--max-tokens", "2",
               "--output", str(out), "--parallel", "1", *model_args(tiny_model))
    _, stderr = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, stderr
    lines = read_jsonl(out)
    times = [x["frame_time"] for x in lines]
    assert times == sorted(times) and len(lines) == 4  # 0, 0.5, 1.0, 1.5 s
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.5, abs=0.11)
    assert elapsed >= 1.5  # frames were released at their own time, not all at once


@pytest.mark.parametrize("flags,message", [
    (["--stream", "/no/such/clip.mp4"], "no such file"),
    (["--stream", "rtsp://127.0.0.1:1/x", "--alert", "violation"], "--alert needs"),
    (["--stream", "rtsp://127.0.0.1:1/x", "--webhook", "http://127.0.0.1:1/"], "--webhook needs"),
    (["--stream", "rtsp://127.0.0.1:1/x", "--every", "0"], "must be > 0"),
    (["somedir", "--stream", "rtsp://127.0.0.1:1/x"], "not both"),
])
def test_bad_watch_flags_are_one_line_errors(tiny_model, tmp_path, capsys, flags, message):
    from vlmserve.cli.main import main

    try:
        rc = main(["watch", *flags, "--output", str(tmp_path / "o.jsonl"),
                   *model_args(tiny_model)])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc != 0 and message in err
    assert "Traceback" not in err


def test_describe_a_clip_and_a_bad_one(tiny_model, tmp_path, capsys):
    clip, bad = tmp_path / "clip.mp4", tmp_path / "bad.mp4"
    write_clip(clip, n_frames=25, rate=10)
    bad.write_text("not a video\n")
    rc = describe("--json", "--temperature", "0", "--max-tokens", "4", str(clip), str(bad),
                  *model_args(tiny_model))
    captured = capsys.readouterr()
    first, second = (json.loads(line) for line in captured.out.splitlines())
    assert first["video"]["pairs"] == 3 and first["video"]["timestamps"] == [0.3, 1.5, 2.4]
    assert first["image_tokens"] > 0 and "error" not in first
    assert "not a readable video" in second["error"]
    assert rc == 1 and captured.err.count("vlmserve: error:") == 1


def test_a_clip_in_a_batch_run_is_a_one_line_error(tiny_model, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n_frames=5)
    rc = describe(str(clip), "--output", str(tmp_path / "out.jsonl"), *model_args(tiny_model))
    err = capsys.readouterr().err
    assert rc != 0 and "video clips are described without --output" in err

"""``vlmserve bench --scenario video`` on the tiny model: a clip's frames, tokens and timings."""

from __future__ import annotations

import json

from tests.bench.cli import vlmserve


def test_video_scenario_reports_frames_tokens_and_a_warm_follow_up(tiny_model, tmp_path):
    out = tmp_path / "video.json"
    done = vlmserve("bench", "--scenario", "video", "--model", str(tiny_model.model),
                    "--mmproj", str(tiny_model.mmproj), "--clip-seconds", "3", "--image",
                    "96x64", "--runs", "1", "--threads", "1", "--threads-vision", "1",
                    "--json", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "vlmserve-bench-video/1"
    (run,) = doc["results"]["runs"]
    assert run["frames"] == 6 and run["pairs"] == 3  # 3 s x 2 fps
    w, h = run["frame_size"]
    assert run["vision_tokens"] == 3 * (w // 32) * (h // 32)
    assert run["encode_ms"] > 0 and run["ttft_ms"] >= run["encode_ms"]
    assert run["follow_up_cached_tokens"] >= run["prompt_tokens"]  # the clip's KV reused
    assert "video scenario" in done.stdout and "load" in done.stdout


def test_video_scenario_refuses_url(capsys):
    from vlmserve.cli.main import main

    rc = main(["bench", "--scenario", "video", "--url", "http://127.0.0.1:9"])
    assert rc != 0 and "--scenario video loads the model here" in capsys.readouterr().err

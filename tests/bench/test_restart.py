"""``vlmserve bench --scenario restart`` on the tiny model: the reloaded engine reads the
picture from the disk tier (never a speed check)."""

from __future__ import annotations

import json

from tests.bench.cli import vlmserve


def test_restart_scenario_reports_a_disk_hit_after_the_reload(tiny_model, tmp_path):
    out = tmp_path / "restart.json"
    done = vlmserve("bench", "--scenario", "restart", "--model", str(tiny_model.model),
                    "--mmproj", str(tiny_model.mmproj), "--image", "256x256", "--runs", "2",
                    "--threads", "1", "--no-progress", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "vlmserve-bench-restart/1" and len(doc["results"]["runs"]) == 2
    for run in doc["results"]["runs"]:
        assert run["cold_disk_hits"] == 0 and run["cold_image_encode_ms"] > 0
        assert run["restarted_disk_hits"] == 1 and run["restarted_image_encode_ms"] == 0
        assert run["ratio"] == round(run["restarted_ttft_ms"] / run["cold_ttft_ms"], 3)
    assert "restarted TTFT" in done.stdout


def test_restart_scenario_refuses_url(tmp_path):
    done = vlmserve("bench", "--scenario", "restart", "--url", "http://127.0.0.1:9",
                    cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("vlmserve: error:")
    assert "Traceback" not in done.stderr

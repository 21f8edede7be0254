"""`./start.sh` on a machine with no model and no network: the loud demo fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from live_server import free_port

REPO = Path(__file__).resolve().parents[2]


def test_start_sh_falls_back_to_the_demo_model_and_stops_cleanly(tmp_path) -> None:
    port, closed = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLMSERVE_", "HF_"))}
    env.update(HOME=str(tmp_path), PORT=str(port),
               # "the network": a hub address where nothing listens, so pull fails fast
               HF_ENDPOINT=f"http://127.0.0.1:{closed}", HF_HUB_DISABLE_TELEMETRY="1")
    log = (tmp_path / "start.log").open("wb")
    proc = subprocess.Popen(["bash", str(REPO / "start.sh"), "--threads", "1", "--no-ui"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        output = (tmp_path / "start.log").read_text(errors="replace")
        assert health is not None and health.status_code == 200, output
        assert "DEMO MODE" in output and "vlmserve pull" in output
        assert (tmp_path / ".cache/vlmserve/demo/model.gguf").is_file()
        assert "random weights" in health.json()["model"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "start.log").read_text(errors="replace")

"""Starting `vlmserve serve` with a model that does not load: honest /health, exit 1."""

from __future__ import annotations

import subprocess
import sys

from live_server import SRC, free_port


def test_a_model_that_fails_to_load_ends_the_server_with_one_line(demo_model, tmp_path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    result = subprocess.run(
        [sys.executable, "-m", "vlmserve.cli.main", "serve", "--model", str(bad),
         "--mmproj", str(demo_model.mmproj), "--port", str(free_port()), "--no-ui",
         "--threads", "1"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(SRC),
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vlmserve: error: ") and "broken.gguf" in last
    assert "Traceback" not in result.stderr


def test_no_model_anywhere_says_how_to_get_one(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vlmserve.cli.main", "serve"], capture_output=True, text=True,
        timeout=60, env={"PYTHONPATH": str(SRC), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "vlmserve pull" in result.stderr

"""Ray is optional: without it vlmserve imports, and ``--ray`` says what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import vlmserve

SRC = str(Path(vlmserve.__file__).resolve().parents[1])

# `import ray` fails in the child as it would where the extra is not installed.
CHILD = """
import sys
sys.modules["ray"] = None
import vlmserve.cli.main, vlmserve.http.app, vlmserve.batch.folder  # nothing pulls Ray in
from vlmserve.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": SRC, "PATH": "/usr/bin"})


def test_serve_and_describe_with_ray_flags_explain_the_extra(tiny_model, tmp_path) -> None:
    model = ["--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj)]
    serve = run("serve", "--ray", *model)
    assert serve.returncode == 1
    assert "--ray needs Ray: pip install 'vlmserve[ray]'" in serve.stderr
    assert "Traceback" not in serve.stderr
    describe = run("describe", "--ray", str(tmp_path), "--output", str(tmp_path / "o.jsonl"),
                   *model)
    assert describe.returncode == 1 and "vlmserve[ray]" in describe.stderr
    assert "Traceback" not in describe.stderr


def test_ray_flags_without_ray_mode_are_refused(tiny_model) -> None:
    result = run("serve", "--replicas", "3", "--model", str(tiny_model.model))
    assert result.returncode == 1 and "--replicas need --ray" in result.stderr

"""schemathesis against the live server's own ``/openapi.json``: no 5xx, and every answer
(status, content type, body) is one the schema documents.

Bounded and seeded so it is the same run every time and fits the suite: a few examples
per operation, the coverage and fuzzing phases only, no shrinking, one worker, a small
context so any generation that gets through ends quickly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from live_server import LiveServer

pytest.importorskip("schemathesis")

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--no-ui", "--ctx-size", "256", "--parallel", "2",
                        "--max-tokens", "8")


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(server, tmp_path: Path):
    cli = Path(sys.executable).with_name("schemathesis")
    command = [str(cli), "run", f"{server.url}/openapi.json", "--checks", CHECKS,
               "--max-examples", "12", "--seed", "20261201", "--phases", "coverage,fuzzing",
               "--no-shrink", "--workers", "1", "--request-timeout", "30",
               "--max-failures", "5", "--report", "junit",
               "--report-dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and " 0 passed" not in run.stdout
    assert "Traceback" not in server.log(None)

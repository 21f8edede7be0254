"""The server a soak run starts: ``vlmserve serve`` as a child process on loopback.

A separate process, so the soak measures the server as deployed (its own RSS, its own
event loop) and a crash of it is seen as one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from vlmserve.bench.workload import BenchError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SoakServer:
    """``vlmserve serve`` on 127.0.0.1 and a free port; its output goes to a log file."""

    def __init__(self, model: Path, mmproj: Path, flags: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile("w+b", prefix="vlmserve-soak-", suffix=".log",
                                                delete=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLMSERVE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vlmserve.cli.main", "serve", "--model", str(model),
             "--mmproj", str(mmproj), "--host", "127.0.0.1", "--port", str(self.port),
             "--no-ui", "--log-level", "warning", *flags],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def log_path(self) -> str:
        return self._log.name

    def wait_ready(self, timeout_s: float = 120.0) -> SoakServer:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the server exited with {self.process.returncode}; see "
                                 f"{self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"the server was not ready after {timeout_s:g} s; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait (kill if it hangs); the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

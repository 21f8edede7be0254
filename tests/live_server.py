"""A real ``vlmserve serve`` process for black-box tests (HTTP API, page).

Like llama.cpp's server tests: the server runs as a subprocess on a free port, with the
tiny demo model, and tests talk to it only over HTTP. Its output goes to a log file that
is printed when a start fails.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

import vlmserve

# The source tree the tests import, so the subprocess runs the same code.
SRC = Path(vlmserve.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_data_uri(width: int = 768, height: int = 768, color: tuple[int, int, int] = (200, 30, 30)
                 ) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class LiveServer:
    """``python -m vlmserve.cli.main serve ...`` on 127.0.0.1 and a free port."""

    def __init__(self, model: Path, mmproj: Path, log_path: Path, *extra: str,
                 env: dict[str, str] | None = None, ca: Path | None = None) -> None:
        """``ca``: the server speaks HTTPS (its flags give the certificate); clients of
        these helpers trust that file."""
        self.port = free_port()
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=str(ca))
                                              if ca else True)
        self.log_path = log_path
        args = [sys.executable, "-m", "vlmserve.cli.main", "serve", "--model", str(model),
                "--mmproj", str(mmproj), "--host", "127.0.0.1", "--port", str(self.port),
                "--threads", "1", "--log-level", "warning", *extra]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("VLMSERVE_")}
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
        child_env.update(env or {})
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=child_env)

    def wait_ready(self, timeout_s: float = 60.0) -> LiveServer:
        """Wait until /health says ok (the model is loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n"
                                   f"{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1,
                             verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def log(self, tail: int | None = 4000) -> str:
        """The server's output (its last ``tail`` characters; all with ``None``)."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def metrics(self, headers: dict[str, str] | None = None) -> str:
        response = httpx.get(f"{self.url}/metrics", headers=headers, timeout=5,
                             verify=self.verify)
        response.raise_for_status()
        return response.text

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Send ``sig`` and wait; kill if it does not exit in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, label_text = key.partition("{")
        if sample != name:
            continue
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if got == want:
            return float(value)
    return 0.0

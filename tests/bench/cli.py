"""``vlmserve ...`` as a subprocess for the bench tests, on this checkout's source, with no
model chosen by the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def vlmserve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("VLMSERVE_MODEL", None)
    env.pop("VLMSERVE_MMPROJ", None)
    return subprocess.run([sys.executable, "-m", "vlmserve.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)

"""Helpers for the batch tests: image folders, the CLI in-process or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import vlmserve
from tests.conftest import png_bytes
from vlmserve.cli.main import main

SRC = str(Path(vlmserve.__file__).resolve().parents[1])
SAFETY_SCHEMA = {"type": "object",
                 "properties": {"helmet": {"type": "boolean"}, "vest": {"type": "boolean"}},
                 "required": ["helmet", "vest"]}


def model_args(files) -> list[str]:
    return ["--model", str(files.model), "--mmproj", str(files.mmproj), "--threads", "1",
            "--ctx-size", "1024", "--no-progress"]


def make_images(folder: Path, n: int, size: int = 64, first_seed: int = 0) -> list[Path]:
    """``n`` distinct PNGs spread over nested folders (a/, a/b/, c/)."""
    subdirs = [folder, folder / "a", folder / "a" / "b", folder / "c"]
    paths = []
    for i in range(n):
        d = subdirs[i % len(subdirs)]
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"img{first_seed + i:03d}.png"
        path.write_bytes(png_bytes(size, size, seed=first_seed + i))
        paths.append(path)
    return paths


def make_broken(folder: Path) -> list[Path]:
    """A text file named .jpg and a truncated PNG."""
    (folder / "c").mkdir(parents=True, exist_ok=True)
    text = folder / "c" / "notes.jpg"
    text.write_text("this is not a picture\n")
    cut = folder / "a" / "cut.png"
    cut.parent.mkdir(parents=True, exist_ok=True)
    cut.write_bytes(png_bytes(64, 64, seed=99)[:120])
    return [text, cut]


def read_jsonl(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the results file ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def describe(*args: str) -> int:
    """``vlmserve describe ...`` in this process."""
    return main(["describe", *args])


def cli(*args: str, **kwargs) -> subprocess.Popen:
    """``vlmserve ...`` as a subprocess (for signals)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [SRC, *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-m", "vlmserve.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll until ``predicate()`` is truthy; fail after ``timeout`` (a safety net only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0

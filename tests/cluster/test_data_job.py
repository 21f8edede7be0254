"""``describe --ray``: the folder job on Ray Data (an actor pool of 2 engines) against a
real local Ray, run as the CLI runs it; the results file is the local job's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from live_server import SRC  # noqa: E402
from tests.conftest import png_bytes  # noqa: E402
from vlmserve.cluster.local import start_ray  # noqa: E402

pytestmark = pytest.mark.slow
N_IMAGES = 30


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    start_ray(None, num_cpus=2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i in range(N_IMAGES):
        where = root / "sub" if i % 3 == 0 else root
        (where / f"p{i:02d}.png").write_bytes(png_bytes(64 + i, 48, i))
    return root


def describe(address: str, model, folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "vlmserve.cli.main", "describe", "--ray-address", address,
            str(folder), "--output", str(out), "--model", str(model.model), "--mmproj",
            str(model.mmproj), "--threads", "1", "--parallel", "2", "--temperature", "0",
            "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def assert_each_image_once(out: Path, folder: Path) -> None:
    rows = lines(out)
    paths = Counter(row["path"] for row in rows)
    assert len(rows) == N_IMAGES and set(paths.values()) == {1}
    assert {Path(p).name for p in paths} == {p.name for p in folder.rglob("*.png")}
    assert all(row["error"] is None and row["content_hash"] for row in rows)


def test_a_ray_data_job_writes_one_line_per_image(ray_address, tiny_model, folder,
                                                  tmp_path) -> None:
    out = tmp_path / "answers.jsonl"
    done = describe(ray_address, tiny_model, folder, out, "--max-tokens", "4")
    _, err = done.communicate(timeout=180)
    assert done.returncode == 0, err
    assert_each_image_once(out, folder)
    # Resuming a finished run answers nothing again.
    again = describe(ray_address, tiny_model, folder, out, "--max-tokens", "4", "--resume")
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0 and f"0 lines written to {out}" in err, err
    assert "30 already there" in err
    assert_each_image_once(out, folder)


def test_an_interrupted_job_resumed_has_each_image_once(ray_address, tiny_model, folder,
                                                       tmp_path) -> None:
    out = tmp_path / "answers.jsonl"
    first = describe(ray_address, tiny_model, folder, out, "--max-tokens", "96")
    deadline = time.monotonic() + 120
    while len(lines(out)) < 4 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGINT, err
    assert "interrupted" in err and "--resume" in err
    written = len(lines(out))
    assert 4 <= written < N_IMAGES

    resumed = describe(ray_address, tiny_model, folder, out, "--max-tokens", "96",
                       "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert f"{written} already there" in err
    assert_each_image_once(out, folder)

"""vlmserve pull against a fake Hugging Face Hub on 127.0.0.1 (see fakehub.py).

The pulls run the real CLI in a subprocess with ``HF_ENDPOINT`` pointing at the
fake hub: huggingface_hub reads its endpoint and offline flag when imported, and
a fresh process is also what a user runs. Only the full-disk case runs in
process, because it replaces ``shutil.disk_usage`` (see that test).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakehub import FakeHub, closed_port

from vlmserve.models.pull import choose_files, pull_model
from vlmserve.models.registry import MANIFEST_NAME, ModelRegistry

SRC = Path(__file__).resolve().parents[3] / "src"
REPO = "Qwen/Qwen3-VL-8B-Instruct-GGUF"
MODEL = "Qwen3VL-8B-Instruct-Q4_K_M.gguf"
MMPROJ = "mmproj-Qwen3VL-8B-Instruct-F16.gguf"
NAME = "Qwen3-VL-8B-Instruct-Q4_K_M"


def _repo_files(model_size: int = 300_000) -> dict[str, bytes]:
    return {
        MODEL: os.urandom(model_size),
        "Qwen3VL-8B-Instruct-Q8_0.gguf": os.urandom(50_000),
        MMPROJ: os.urandom(120_000),
        "mmproj-Qwen3VL-8B-Instruct-Q8_0.gguf": os.urandom(60_000),
        "README.md": b"# Qwen3-VL-8B-Instruct-GGUF\n",
    }


@pytest.fixture
def hub():
    hubs: list[FakeHub] = []

    def start(files: dict[str, bytes] | None = None, **knobs) -> FakeHub:
        h = FakeHub(REPO, files if files is not None else _repo_files(), **knobs)
        h.start()
        hubs.append(h)
        return h

    yield start
    for h in hubs:
        h.stop()


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point an in-process pull at a fake hub, and keep huggingface_hub off the real one.

    pull reads HF_ENDPOINT at call time. huggingface_hub itself froze its settings
    at import: its cache folder is moved to tmp, and its agent-harness registry
    (fetched once a day from the default endpoint) is pre-seeded empty so the
    client does not contact the real Hub during the test.
    """
    from huggingface_hub import constants

    def point_at(url: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        if hasattr(constants, "AGENT_HARNESSES_PATH"):
            seeded = tmp_path / "agent-harnesses.json"
            seeded.write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
            monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(seeded))

    return point_at


def run_cli(args: list[str], endpoint: str, tmp_path: Path, **extra_env: str):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and "proxy" not in k.lower()
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf-home"),  # no token, no cache from the machine
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(SRC),
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "vlmserve.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("vlmserve: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_pull_installs_and_registry_lists_it(hub, tmp_path: Path, hf_env) -> None:
    h = hub()
    models = tmp_path / "models"
    r = run_cli(["pull", "--dir", str(models), "-q"], h.url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{NAME}\tQ4_K_M\t")

    [entry] = ModelRegistry(models).list_models()
    assert (entry.name, entry.quant, entry.source, entry.repo) == (NAME, "Q4_K_M", "hf", REPO)
    assert entry.model_path == models / NAME / MODEL
    assert entry.mmproj_path == models / NAME / MMPROJ  # F16 preferred over Q8_0
    assert entry.model_path.read_bytes() == h.files[MODEL]
    assert entry.mmproj_path.read_bytes() == h.files[MMPROJ]
    assert sorted(p.name for p in (models / NAME).iterdir()) == sorted(
        [MODEL, MMPROJ, MANIFEST_NAME]
    )
    assert [p.name for p in models.iterdir()] == [NAME]  # no staging left behind
    manifest = json.loads((models / NAME / MANIFEST_NAME).read_text())
    assert manifest["revision"] == h.commit
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == {
        MODEL: hashlib.sha256(h.files[MODEL]).hexdigest(),
        MMPROJ: hashlib.sha256(h.files[MMPROJ]).hexdigest(),
    }
    # Only the chosen files were fetched.
    fetched = {r.path.rsplit("/", 1)[-1] for r in h.requests if "/resolve/" in r.path}
    assert fetched == {MODEL, MMPROJ}

    listing = run_cli(["models", "--dir", str(models), "--json"], h.url, tmp_path)
    assert json.loads(listing.stdout)[0]["name"] == NAME

    # Pulling again (through the API, in process) finds it installed and downloads nothing.
    hf_env(h.url)
    before = len(h.requests)
    entry_again = pull_model(models_dir=models, progress=False)
    assert entry_again.name == NAME
    assert not [r for r in h.requests[before:] if "/resolve/" in r.path]


def test_interrupted_download_resumes(hub, tmp_path: Path) -> None:
    """The server hangs up mid-file on the first GET; the client resumes with a Range request.

    huggingface_hub writes the body in DOWNLOAD_CHUNK_SIZE pieces (10 MiB in 2.x),
    so what it has on disk when the connection drops, and where it resumes, is
    the last whole chunk: the file is made big enough to hold some.
    """
    from huggingface_hub import constants

    chunk = constants.DOWNLOAD_CHUNK_SIZE
    size = 2 * chunk + 1_000_000
    drop_at = chunk + chunk // 2
    h = hub(_repo_files(model_size=size), drop_after={MODEL: drop_at})
    models = tmp_path / "models"
    r = run_cli(["pull", "--dir", str(models), "-q"], h.url, tmp_path)
    assert r.returncode == 0, r.stderr

    gets = h.gets(MODEL)
    assert len(gets) == 2 and gets[0].range is None
    had_on_disk = (drop_at // chunk) * chunk  # what the client had written when it lost the line
    assert gets[1].range == f"bytes={had_on_disk}-"
    assert h.bytes_served[MODEL] < 1.5 * size
    assert (models / NAME / MODEL).read_bytes() == h.files[MODEL]


def test_corrupted_file_is_rejected_and_nothing_left(hub, tmp_path: Path) -> None:
    files = _repo_files()
    bad = bytearray(files[MMPROJ])
    bad[1000] ^= 0xFF  # same size, different bytes than the listing's sha256
    h = hub(files, serve_bytes={MMPROJ: bytes(bad)})
    models = tmp_path / "models"
    r = run_cli(["pull", "--dir", str(models), "-q"], h.url, tmp_path)
    assert r.returncode == 1
    line = _one_line_error(r.stderr)
    assert f"{MMPROJ} failed verification (SHA-256" in line
    assert "the download was discarded" in line
    assert list(models.iterdir()) == []  # no model, and the staging folder was cleaned
    assert ModelRegistry(models).list_models() == []


def test_full_disk(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, hf_env) -> None:
    """Simulated honestly by lying about free space to this process only.

    A tiny filesystem cannot be mounted here, so ``shutil.disk_usage`` is replaced
    in-process for this one test; everything else (listing the fake hub, the CLI,
    the error path) is real. It runs in process for that reason; pull reads
    HF_ENDPOINT at call time, so the fake hub is still the one asked.
    """
    import shutil
    from collections import namedtuple

    from vlmserve.cli.main import main

    h = hub()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 50_000, 50_000))
    hf_env(h.url)
    models = tmp_path / "models"
    rc = main(["pull", "--dir", str(models), "-q"])
    assert rc == 1
    line = _one_line_error(capsys.readouterr().err)
    assert f"not enough disk space in {models}: {NAME} needs" in line
    assert "KiB is free" in line
    assert not [r for r in h.requests if "/resolve/" in r.path]  # checked before downloading
    assert ModelRegistry(models).list_models() == []


def test_unreachable_hub_names_files_and_folder(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    models = tmp_path / "models"
    r = run_cli(["pull", "--dir", str(models), "-q"], endpoint, tmp_path)
    assert r.returncode == 1
    line = _one_line_error(r.stderr)
    assert line.startswith(f"vlmserve: error: cannot list {REPO} (Hugging Face: ")
    assert endpoint in line
    try:
        import modelscope  # noqa: F401
    except ImportError:
        assert "ModelScope: the modelscope package is not installed" in line
    assert f"download {MODEL} and {MMPROJ}" in line
    assert f"into {models / NAME}/" in line
    assert ModelRegistry(models).list_models() == []


def test_hf_only_source_and_offline_flag(tmp_path: Path, hub) -> None:
    h = hub()
    r = run_cli(
        ["pull", "--dir", str(tmp_path / "m"), "--source", "hf", "-q"],
        h.url,
        tmp_path,
        HF_HUB_OFFLINE="1",
    )
    assert r.returncode == 1
    line = _one_line_error(r.stderr)
    assert "Hugging Face: HF_HUB_OFFLINE is set" in line and "ModelScope" not in line
    assert not h.requests


def test_missing_quant_lists_what_the_repo_has(hub, tmp_path: Path) -> None:
    h = hub()
    r = run_cli(["pull", "--dir", str(tmp_path / "m"), "--quant", "Q5_K_S", "-q"], h.url, tmp_path)
    assert r.returncode == 1
    assert _one_line_error(r.stderr) == (
        f"vlmserve: error: {REPO} has no Q5_K_S GGUF; it offers: Q4_K_M, Q8_0"
    )


def test_unknown_repo(hub, tmp_path: Path) -> None:
    h = hub()
    r = run_cli(["pull", "Qwen/Nope-GGUF", "--dir", str(tmp_path / "m"), "-q"], h.url, tmp_path)
    assert r.returncode == 1
    assert "Hugging Face: no such repository" in _one_line_error(r.stderr)


# ------------------------------------------------------------------ file choice (no server)


def _listing(*names: str) -> list[tuple[str, int, str | None]]:
    return [(n, 10, "0" * 64) for n in names]


def test_choose_files() -> None:
    files = choose_files(
        _listing("X-BF16.gguf", "X-F16.gguf", "mmproj-X-Q8_0.gguf", "mmproj-X-F16.gguf"),
        "F16",
        "r/x",
    )
    assert [(f.path, f.role) for f in files] == [
        ("X-F16.gguf", "model"),
        ("mmproj-X-F16.gguf", "mmproj"),
    ]
    split = choose_files(
        _listing(
            "Q8_0/X-Q8_0-00002-of-00002.gguf",
            "Q8_0/X-Q8_0-00001-of-00002.gguf",
            "mmproj-X-Q8_0.gguf",
        ),
        "q8_0",
        "r/x",
    )
    assert [f.name for f in split] == [
        "X-Q8_0-00001-of-00002.gguf",
        "X-Q8_0-00002-of-00002.gguf",
        "mmproj-X-Q8_0.gguf",
    ]


def test_choose_files_errors() -> None:
    from vlmserve.errors import PullError

    with pytest.raises(PullError, match="r/x has no mmproj"):
        choose_files(_listing("X-Q4_K_M.gguf"), "Q4_K_M", "r/x")
    with pytest.raises(PullError, match="r/x has no Q4_K_M GGUF; it offers: no text-model"):
        choose_files(_listing("mmproj-X-F16.gguf", "README.md"), "Q4_K_M", "r/x")


# ------------------------------------------------------------------ resuming, updating


def test_failed_pull_keeps_finished_files_for_the_next_run(hub, tmp_path: Path) -> None:
    h = hub(refuse_get={MMPROJ})
    models = tmp_path / "models"
    r = run_cli(["pull", "--dir", str(models), "-q"], h.url, tmp_path)
    assert r.returncode == 1
    line = _one_line_error(r.stderr)
    assert f"download of {MMPROJ} failed (HTTP 403" in line
    assert "run the same pull again to resume" in line
    assert ModelRegistry(models).list_models() == []  # a partial pull is not a model
    assert ModelRegistry(models).partial_downloads() == [models / f".partial-{NAME}"]

    h.refuse_get.clear()
    r = run_cli(["pull", "--dir", str(models), "-q"], h.url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(h.gets(MODEL)) == 1  # the model file finished in the first run is reused
    assert ModelRegistry(models).get(NAME).model_path.read_bytes() == h.files[MODEL]
    assert ModelRegistry(models).partial_downloads() == []


def test_new_revision_replaces_the_installed_files(hub, tmp_path: Path, hf_env) -> None:
    h = hub()
    hf_env(h.url)
    models = tmp_path / "models"
    pull_model(models_dir=models, progress=False)
    ModelRegistry(models).set_default(NAME)
    h.commit = "f" * 40
    h.files[MODEL] = os.urandom(310_000)
    entry = pull_model(models_dir=models, progress=False)
    assert entry.revision == "f" * 40 and entry.is_default  # the default flag survives
    assert entry.model_path.read_bytes() == h.files[MODEL]
    assert [p.name for p in models.iterdir()] == [NAME]


def test_folder_holding_another_model_is_not_overwritten(hub, tmp_path: Path, hf_env) -> None:
    from vlmserve.errors import PullError

    h = hub()
    hf_env(h.url)
    models = tmp_path / "models"
    (models / NAME).mkdir(parents=True)
    (models / NAME / "mine.gguf").write_bytes(b"x")
    with pytest.raises(PullError, match="already exists and holds another model"):
        pull_model(models_dir=models, progress=False)
    assert (models / NAME / "mine.gguf").exists()


# ------------------------------------------------------------------ ModelScope fallback


STUB_MODELSCOPE = Path(__file__).resolve().parent / "stub_modelscope"


def test_auto_falls_back_to_modelscope_when_hf_is_unreachable(tmp_path: Path) -> None:
    """HF refuses connections; the (stand-in) ModelScope client serves the repo."""
    ms_root = tmp_path / "modelscope-repos"
    repo_dir = ms_root / REPO
    repo_dir.mkdir(parents=True)
    files = _repo_files()
    for name, data in files.items():
        (repo_dir / name).write_bytes(data)
    models = tmp_path / "models"
    r = run_cli(
        ["pull", "--dir", str(models)],
        f"http://127.0.0.1:{closed_port()}",
        tmp_path,
        PYTHONPATH=f"{SRC}{os.pathsep}{STUB_MODELSCOPE}",
        STUB_MODELSCOPE_ROOT=str(ms_root),
    )
    assert r.returncode == 0, r.stderr
    assert "listing Qwen/Qwen3-VL-8B-Instruct-GGUF on ModelScope" in r.stderr
    entry = ModelRegistry(models).get(NAME)
    assert entry.source == "modelscope" and entry.mmproj_path.name == MMPROJ
    manifest = json.loads((entry.folder / MANIFEST_NAME).read_text())
    # This ModelScope listing carries no checksums: they are computed and marked so.
    rec = {f["name"]: f for f in manifest["files"]}
    assert rec[MODEL]["sha256"] == hashlib.sha256(files[MODEL]).hexdigest()
    assert rec[MODEL]["sha256_from_hub"] is False


def test_modelscope_source_without_the_package(tmp_path: Path) -> None:
    r = run_cli(
        ["pull", "--source", "modelscope", "--dir", str(tmp_path / "m"), "-q"],
        "http://127.0.0.1:9",
        tmp_path,
    )
    assert r.returncode == 1
    line = _one_line_error(r.stderr)
    assert "ModelScope: the modelscope package is not installed" in line
    assert "https://modelscope.cn/models/Qwen/Qwen3-VL-8B-Instruct-GGUF/files" in line

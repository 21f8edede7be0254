"""Download a Qwen3-VL GGUF model and its mmproj into the models folder, verified.

``pull_model`` lists the repository (file names are never hard-coded), picks the
text GGUF carrying the requested quantization and an mmproj (F16 preferred),
checks the free disk space, downloads with the hub's own client into a staging
folder ``.partial-NAME/`` inside the models folder, checks every file's size and
SHA-256 against the hub's listing, and only then moves the files into
``NAME/`` (``os.replace`` of each file, then one rename of the folder) and
writes the manifest last. So the registry never sees a partial or corrupt
download as a model; a file that fails verification is discarded with its
staging folder.

Resuming: the hub client retries a dropped connection with an HTTP Range
request from the bytes it already has. Files completed and verified before an
interruption stay in the staging folder, so running the same pull again only
fetches what is missing. (Whether a half-written *file* survives between two
runs depends on the huggingface_hub version: 0.x kept ``.incomplete`` files,
2.x deletes them on failure; Xet-backed downloads resume from their chunk cache.)

Sources: ``hf`` (Hugging Face, honouring ``HF_ENDPOINT``, ``HF_TOKEN``,
``HF_HUB_OFFLINE`` and the usual proxy variables through huggingface_hub),
``modelscope`` (through the ``modelscope`` package, if installed), or ``auto``:
Hugging Face first, then ModelScope when Hugging Face cannot be reached.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlmserve.errors import PullError
from vlmserve.models.memory import MiB, fmt_bytes
from vlmserve.models.registry import (
    MANIFEST_FORMAT,
    STAGING_PREFIX,
    ModelEntry,
    ModelRegistry,
    default_models_dir,
    is_mmproj_name,
    pick_mmproj,
    quant_from_name,
    quant_in_name,
    read_manifest,
    write_manifest,
)

DEFAULT_REPO = "Qwen/Qwen3-VL-8B-Instruct-GGUF"
DEFAULT_QUANT = "Q4_K_M"
COMMON_QUANTS = ("Q4_K_M", "Q5_K_S", "Q8_0", "F16")
SOURCES = ("auto", "hf", "modelscope")

# Free space kept beyond the download itself: filesystems misbehave when full.
DISK_MARGIN_BYTES = 256 * MiB
DISK_MARGIN_FRACTION = 0.02

_STAGING_MARKER = ".vlmserve-pull.json"
_HASH_CHUNK = 8 * MiB

# File names as published in the default repo, used ONLY to word the by-hand
# instructions when the repo cannot be listed (choosing files always lists it).
_KNOWN_FILES = {
    DEFAULT_REPO: {
        "model": "Qwen3VL-8B-Instruct-{quant}.gguf",
        "mmproj": "mmproj-Qwen3VL-8B-Instruct-F16.gguf",
    }
}

Status = Callable[[str], None]


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, as the hub lists it."""

    path: str  # path inside the repo (may contain folders)
    size: int
    sha256: str | None  # from the hub's LFS metadata; None if the hub gave none
    role: str  # "model" or "mmproj"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PullPlan:
    source: str  # "hf" or "modelscope"
    repo: str
    revision: str | None  # the commit the files are pinned to (None: the source's default)
    quant: str
    name: str  # local folder name
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class _SourceUnavailable(Exception):
    """This source cannot be used now (unreachable, offline, not installed, no such repo)."""


def pull_model(
    repo: str = DEFAULT_REPO,
    quant: str = DEFAULT_QUANT,
    source: str = "auto",
    models_dir: str | Path | None = None,
    progress: bool = True,
    *,
    name: str | None = None,
    revision: str | None = None,
    on_status: Status | None = None,
) -> ModelEntry:
    """Download ``repo``'s ``quant`` GGUF and its mmproj; return the installed entry.

    Raises ``PullError`` (one line) when the hub cannot be reached (with the
    exact files to copy by hand and where), the quantization or an mmproj is
    missing from the repo, the disk is too small, or a file fails verification.
    """
    if source not in SOURCES:
        raise PullError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", repo):
        raise PullError(f"{repo!r} is not a repository id like Qwen/Qwen3-VL-8B-Instruct-GGUF")
    if not re.fullmatch(r"[A-Za-z0-9_]+", quant):
        raise PullError(f"{quant!r} is not a quantization name like Q4_K_M")
    say = on_status or (lambda _msg: None)
    root = Path(models_dir).expanduser() if models_dir else default_models_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PullError(f"cannot create the models folder {root}: {exc.strerror or exc}") from None
    local_name = _safe_name(name or default_model_name(repo, quant))

    plan = _make_plan(repo, quant, source, revision, local_name, root, say)
    final = root / plan.name
    existing = _check_existing(final, plan)
    if existing is not None:
        say(f"{plan.name} is already installed and up to date in {final}")
        return existing

    lock = _lock(root / f"{STAGING_PREFIX}{plan.name}.lock")
    with lock:
        try:
            staging = _prepare_staging(root / f"{STAGING_PREFIX}{plan.name}", plan)
            _check_disk(root, plan, staging)
            for f in plan.files:
                hub_label = _source_label(plan.source)
                say(f"downloading {f.name} ({fmt_bytes(f.size)}) from {hub_label}")
                try:
                    path = _download(plan, f, staging, progress)
                except _SourceUnavailable as exc:
                    hint = _manual_hint(plan.repo, plan.quant, final, plan.source, plan.files)
                    raise PullError(
                        f"download of {f.name} failed ({exc}); "
                        f"run the same pull again to resume, or {hint}"
                    ) from None
                _verify(path, f, staging, progress, say)
            _install(staging, final, plan)
        except OSError as exc:  # local file-system trouble: permissions, disk full, races
            where = exc.filename or root
            raise PullError(f"cannot write the model into {where}: {exc.strerror or exc}") from None
    say(f"installed {plan.name} in {final}")
    return ModelRegistry(root).get(plan.name)


def default_model_name(repo: str, quant: str) -> str:
    """``Qwen/Qwen3-VL-8B-Instruct-GGUF`` + ``Q4_K_M`` -> ``Qwen3-VL-8B-Instruct-Q4_K_M``."""
    base = repo.rsplit("/", 1)[-1]
    base = re.sub(r"[-_.]gguf$", "", base, flags=re.IGNORECASE)
    return f"{base}-{quant.upper()}"


def choose_files(
    listing: list[tuple[str, int, str | None]], quant: str, repo: str
) -> list[RemoteFile]:
    """Pick the text GGUF(s) for ``quant`` and one mmproj from a repo listing.

    ``listing`` holds ``(path, size, sha256)``. The text model is the ``.gguf``
    whose name carries ``quant`` as a whole token and does not start with
    ``mmproj``; a split model brings all its shards. Raises ``PullError``
    naming what the repo does offer.
    """
    ggufs = [x for x in listing if x[0].lower().endswith(".gguf")]
    by_name = {p.rsplit("/", 1)[-1]: (p, size, sha) for p, size, sha in ggufs}
    texts = [p for p in ggufs if not is_mmproj_name(p[0].rsplit("/", 1)[-1])]
    matches = [t for t in texts if quant_in_name(quant, t[0].rsplit("/", 1)[-1])]
    if not matches:
        offered = sorted({q for t in texts if (q := quant_from_name(t[0].rsplit("/", 1)[-1]))})
        have = ", ".join(offered) if offered else "no text-model GGUF files"
        raise PullError(f"{repo} has no {quant} GGUF; it offers: {have}")
    # Prefer files at the top of the repo, then the shortest name (the plain variant).
    matches.sort(key=lambda t: (t[0].count("/"), len(t[0]), t[0]))
    first = matches[0]
    shard = re.search(r"-(\d{5})-of-(\d{5})\.gguf$", first[0], re.IGNORECASE)
    if shard:
        prefix = first[0][: shard.start()]
        chosen = sorted(
            t
            for t in texts
            if t[0].startswith(prefix)
            and re.fullmatch(r"-\d{5}-of-\d{5}\.gguf", t[0][len(prefix) :], re.I)
        )
    else:
        chosen = [first]
    mmproj_name = pick_mmproj(list(by_name))
    if mmproj_name is None:
        raise PullError(f"{repo} has no mmproj*.gguf vision projector: it cannot serve images")
    mm = by_name[mmproj_name]
    files = [RemoteFile(p, size, sha, "model") for p, size, sha in chosen]
    files.append(RemoteFile(mm[0], mm[1], mm[2], "mmproj"))
    if len({f.name for f in files}) != len(files):
        raise PullError(f"{repo}: two chosen files share the name {files[0].name}")
    return files


# --------------------------------------------------------------------------- planning


def _make_plan(
    repo: str, quant: str, source: str, revision: str | None, name: str, root: Path, say: Status
) -> PullPlan:
    sources = ["hf", "modelscope"] if source == "auto" else [source]
    failures = []
    for src in sources:
        try:
            say(f"listing {repo} on {_source_label(src)}")
            rev, listing = _LISTERS[src](repo, revision)
        except _SourceUnavailable as exc:
            failures.append(f"{_source_label(src)}: {exc}")
            continue
        files = choose_files(listing, quant, repo)
        return PullPlan(src, repo, rev, quant.upper(), name, tuple(files))
    raise PullError(
        f"cannot list {repo} ({'; '.join(failures)}); "
        f"{_manual_hint(repo, quant, root / name, sources[0], None)}"
    )


def _hf_endpoint() -> str | None:
    # Read now, not at import: huggingface_hub reads HF_ENDPOINT once at its import.
    return os.environ.get("HF_ENDPOINT") or None


def _list_hf(
    repo: str, revision: str | None
) -> tuple[str | None, list[tuple[str, int, str | None]]]:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=_hf_endpoint())
    with _hf_errors():
        # model_info pins the branch to a commit and, unlike the tree listing, does not
        # retry with backoff, so an unreachable hub fails in one round trip.
        info = api.model_info(repo, revision=revision)
        commit = info.sha or revision
        listing = []
        for entry in api.list_repo_tree(repo, revision=commit, recursive=True):
            if isinstance(entry, RepoFile):
                lfs = entry.lfs
                sha = None
                if lfs is not None:
                    sha = getattr(lfs, "sha256", None) or (
                        lfs.get("sha256") if isinstance(lfs, dict) else None
                    )
                listing.append((entry.path, int(entry.size), sha))
    return commit, listing


def _list_modelscope(
    repo: str, revision: str | None
) -> tuple[str | None, list[tuple[str, int, str | None]]]:
    try:
        from modelscope.hub.api import HubApi  # type: ignore[import-not-found]
    except ImportError:
        raise _SourceUnavailable(
            "the modelscope package is not installed (pip install modelscope)"
        ) from None
    try:
        kwargs: dict[str, Any] = {"recursive": True}
        if revision:
            kwargs["revision"] = revision
        entries = HubApi().get_model_files(repo, **kwargs)
    except (
        Exception
    ) as exc:  # the modelscope client raises many unrelated types; all mean "unusable"
        raise _SourceUnavailable(_short(exc)) from None
    listing = []
    for e in entries or []:
        if not isinstance(e, dict) or e.get("Type") == "tree":
            continue
        path = e.get("Path") or e.get("Name")
        if path and e.get("Size") is not None:
            listing.append((str(path), int(e["Size"]), e.get("Sha256") or None))
    return revision, listing


_LISTERS: dict[
    str, Callable[[str, str | None], tuple[str | None, list[tuple[str, int, str | None]]]]
] = {
    "hf": _list_hf,
    "modelscope": _list_modelscope,
}


# --------------------------------------------------------------------------- downloading


def _download(plan: PullPlan, f: RemoteFile, staging: Path, progress: bool) -> Path:
    if plan.source == "hf":
        from huggingface_hub import hf_hub_download

        kwargs: dict[str, Any] = dict(
            repo_id=plan.repo,
            filename=f.path,
            revision=plan.revision,
            local_dir=str(staging),
            endpoint=_hf_endpoint(),
        )
        if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            kwargs["tqdm_class"] = _silent_tqdm()
        with _hf_errors():
            return Path(hf_hub_download(**kwargs))
    try:
        from modelscope.hub.file_download import (  # type: ignore[import-not-found]
            model_file_download,
        )
    except ImportError:
        raise _SourceUnavailable("the modelscope package is not installed") from None
    try:
        return Path(
            model_file_download(plan.repo, f.path, revision=plan.revision, local_dir=str(staging))
        )
    except Exception as exc:  # see _list_modelscope
        raise _SourceUnavailable(_short(exc)) from None


@contextmanager
def _hf_errors() -> Iterator[None]:
    """Turn huggingface_hub / HTTP-client failures into _SourceUnavailable or PullError."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except OfflineModeIsEnabled:
        raise _SourceUnavailable("HF_HUB_OFFLINE is set") from None
    except RepositoryNotFoundError:
        raise _SourceUnavailable(
            "no such repository (or it is private or gated: set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError as exc:
        raise PullError(f"no such revision: {_short(exc)}") from None
    except EntryNotFoundError as exc:
        if isinstance(exc, LocalEntryNotFoundError):  # "check your connection"
            raise _SourceUnavailable(_short(exc)) from None
        raise PullError(f"a file vanished from the repository: {_short(exc)}") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise _SourceUnavailable(
            f"HTTP {status}: {_short(exc)}" if status else _short(exc)
        ) from None
    except _transport_errors() as exc:
        raise _SourceUnavailable(f"{_endpoint_label()}: {_short(exc)}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise PullError(f"the disk filled up while downloading: {_short(exc)}") from None
        # huggingface_hub's size-consistency check, and local disk errors (ENOSPC).
        raise _SourceUnavailable(_short(exc)) from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 2.x uses httpx2, 1.x httpx, 0.x requests: collect whichever are installed.
    errors: list[type[BaseException]] = []
    for module, attr in (
        ("httpx2", "HTTPError"),
        ("httpx", "HTTPError"),
        ("requests", "RequestException"),
    ):
        try:
            errors.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


# ------------------------------------------------------------------ staging, checks, install


def _prepare_staging(staging: Path, plan: PullPlan) -> Path:
    """Reuse a staging folder from an interrupted pull of the same files, else start clean."""
    marker = {
        "repo": plan.repo,
        "revision": plan.revision,
        "source": plan.source,
        "files": [[f.path, f.size, f.sha256] for f in plan.files],
    }
    if staging.exists():
        try:
            previous = json.loads((staging / _STAGING_MARKER).read_text())
        except (OSError, ValueError):
            previous = None
        if previous != marker:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        (staging / _STAGING_MARKER).write_text(json.dumps(marker))
    except OSError as exc:
        raise PullError(f"cannot write to {staging.parent}: {exc.strerror or exc}") from None
    return staging


def _check_disk(root: Path, plan: PullPlan, staging: Path) -> None:
    have_already = 0
    for f in plan.files:
        p = staging / f.path
        if p.is_file():
            have_already += min(p.stat().st_size, f.size)
    needed = plan.total_bytes - have_already
    margin = max(DISK_MARGIN_BYTES, int(plan.total_bytes * DISK_MARGIN_FRACTION))
    free = shutil.disk_usage(root).free
    if needed + margin > free:
        raise PullError(
            f"not enough disk space in {root}: {plan.name} needs {fmt_bytes(needed)} more "
            f"(+{fmt_bytes(margin)} margin) but {fmt_bytes(free)} is free; free some space or "
            "pull into another folder with --dir"
        )


def sha256_file(path: Path, progress: bool = False) -> str:
    """SHA-256 of a file, streamed in 8 MiB chunks."""
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # disable=None: shown on a terminal only, like huggingface_hub's download bars.
        bar = tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"verify {path.name}",
            disable=None,
        )
    try:
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return h.hexdigest()


def _verify(path: Path, f: RemoteFile, staging: Path, progress: bool, say: Status) -> None:
    """Size, then SHA-256; on mismatch discard the whole staging folder."""
    size = path.stat().st_size
    problem = None
    if size != f.size:
        problem = f"size {size} bytes, the hub lists {f.size}"
    elif f.sha256:
        say(f"verifying {f.name}")
        digest = sha256_file(path, progress)
        if digest != f.sha256.lower():
            problem = f"SHA-256 {digest[:12]}... differs from the hub's {f.sha256[:12]}..."
    if problem:
        shutil.rmtree(staging, ignore_errors=True)
        raise PullError(
            f"{f.name} failed verification ({problem}): the download was discarded; "
            "run the pull again"
        )


def _install(staging: Path, final: Path, plan: PullPlan) -> None:
    """Flatten the files into the staging root, rename the folder into place, manifest last."""
    records = []
    for f in plan.files:
        src = staging / f.path
        dst = staging / f.name
        if src != dst:
            os.replace(src, dst)
        records.append(
            {
                "name": f.name,
                "path_in_repo": f.path,
                "size": f.size,
                "sha256": f.sha256 or sha256_file(dst),
                "sha256_from_hub": bool(f.sha256),
                "role": f.role,
            }
        )
    # Leave only the model files: drop the hub client's bookkeeping and our marker.
    for p in list(staging.iterdir()):
        if p.name in {f.name for f in plan.files}:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    old = None
    if final.exists():  # an update of the same model: swap folders, drop the old one after
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        was_default = bool((read_manifest(old) or {}).get("default"))
        shutil.rmtree(old, ignore_errors=True)
    else:
        was_default = False
    model_files = [f.name for f in plan.files if f.role == "model"]
    write_manifest(
        final,
        {
            "format": MANIFEST_FORMAT,
            "name": plan.name,
            "repo": plan.repo,
            "revision": plan.revision,
            "source": plan.source,
            "quant": plan.quant,
            "model_file": model_files[0],
            "mmproj_file": next(f.name for f in plan.files if f.role == "mmproj"),
            "files": records,
            "pulled_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "default": was_default,
        },
    )


def _check_existing(final: Path, plan: PullPlan) -> ModelEntry | None:
    """The entry if ``final`` already holds exactly this plan; error if it holds something else."""
    if not final.exists():
        return None
    manifest = read_manifest(final)
    if not manifest or manifest.get("repo") != plan.repo or manifest.get("quant") != plan.quant:
        raise PullError(
            f"{final} already exists and holds another model: remove it "
            f"(vlmserve models rm {final.name}) or pull with --name"
        )
    wanted = {(f.name, f.size) for f in plan.files}
    present = {(r.get("name"), r.get("size")) for r in manifest.get("files", [])}
    on_disk = all((final / n).is_file() and (final / n).stat().st_size == s for n, s in wanted)
    if manifest.get("revision") == plan.revision and wanted == present and on_disk:
        return ModelRegistry(final.parent).get(final.name)
    return None  # a newer revision or damaged files: pull again and swap


def _lock(path: Path) -> Any:
    """A lock so two pulls of one model do not write the same staging folder."""
    try:
        from filelock import FileLock, Timeout
    except ImportError:  # filelock comes with huggingface_hub; without it, no locking
        from contextlib import nullcontext

        return nullcontext()

    class _Lock:
        def __init__(self) -> None:
            self._lock = FileLock(str(path))

        def __enter__(self) -> None:
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                raise PullError(
                    f"another pull into {path.parent} of this model is running"
                ) from None

        def __exit__(self, *exc: Any) -> None:
            self._lock.release()
            Path(path).unlink(missing_ok=True)

    return _Lock()


# --------------------------------------------------------------------------- messages


def _manual_hint(
    repo: str, quant: str, target: Path, source: str, files: tuple[RemoteFile, ...] | None
) -> str:
    if files:
        what = " and ".join(f.name for f in files)
    elif repo in _KNOWN_FILES:
        known = _KNOWN_FILES[repo]
        what = (
            f"{known['model'].format(quant=quant.upper())} and {known['mmproj']} "
            "(names as last published; check the repo's file list)"
        )
    else:
        what = f"the .gguf whose name contains {quant} and an mmproj*.gguf (F16 preferred)"
    return f"to install by hand, download {what} from {_repo_url(repo, source)} into {target}/"


def _repo_url(repo: str, source: str) -> str:
    if source == "modelscope":
        return f"https://modelscope.cn/models/{repo}/files"
    return f"{_hf_endpoint() or 'https://huggingface.co'}/{repo}/tree/main"


def _source_label(source: str) -> str:
    return {"hf": "Hugging Face", "modelscope": "ModelScope"}.get(source, source)


def _endpoint_label() -> str:
    return _hf_endpoint() or "https://huggingface.co"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not cleaned:
        raise PullError(f"{name!r} cannot be used as a model folder name")
    return cleaned

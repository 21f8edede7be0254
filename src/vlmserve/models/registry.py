"""The local models folder: what is installed, which one is the default, and name -> files.

Layout (one subfolder per model; ``vlmserve pull`` creates them, people may too)::

    $VLMSERVE_HOME/models/            (default ~/.cache/vlmserve/models)
      Qwen3-VL-8B-Instruct-Q4_K_M/
        Qwen3VL-8B-Instruct-Q4_K_M.gguf     the text model
        mmproj-Qwen3VL-8B-Instruct-F16.gguf the vision projector (mmproj*.gguf)
        vlmserve-model.json                 manifest, written last by pull (optional)
      .partial-Qwen3-VL-8B-Instruct-Q8_0/   a download in progress: never listed

The manifest records where the files came from (repo, revision, source), their
sizes and SHA-256, which file is the model and which the mmproj, and the
``default`` flag. Without a manifest the roles are read from the file names.
Nothing here opens the GGUF files except to learn a quantization name that the
file name does not carry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmserve.errors import ModelLoadError, ModelNotFoundError, VlmserveError

MANIFEST_NAME = "vlmserve-model.json"
MANIFEST_FORMAT = 1
STAGING_PREFIX = ".partial-"

# A quantization name inside a file name: Q4_K_M, Q8_0, IQ4_XS, Q4_K_XL, F16, BF16, F32...
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Za-z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE
)
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# mmproj precision preference when several sit beside a model: full precision first.
_MMPROJ_PREFERENCE = ("f16", "bf16", "f32", "q8_0")


def default_models_dir(env: dict[str, str] | None = None) -> Path:
    """``$VLMSERVE_HOME/models``, else ``~/.cache/vlmserve/models``."""
    env = dict(os.environ) if env is None else env
    home = env.get("VLMSERVE_HOME")
    if home:
        return Path(home).expanduser() / "models"
    return Path.home() / ".cache" / "vlmserve" / "models"


def is_mmproj_name(filename: str) -> bool:
    return filename.lower().startswith("mmproj") and filename.lower().endswith(".gguf")


def quant_in_name(quant: str, filename: str) -> bool:
    """Whether ``filename`` has ``quant`` as a whole token (F16 not in BF16, Q4_K not in Q4_K_M)."""
    pattern = rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])"
    return re.search(pattern, filename, re.IGNORECASE) is not None


def quant_from_name(filename: str) -> str | None:
    """The quantization a file name states (``...-Q4_K_M.gguf`` -> ``Q4_K_M``), if any."""
    stem = _SHARD_RE.sub("", filename)
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    found = _QUANT_RE.findall(stem)
    return found[-1].upper() if found else None


def _is_loadable_file(filename: str) -> bool:
    """Not a later shard of a split model (llama.cpp is given the first shard)."""
    m = _SHARD_RE.search(filename)
    return m is None or m.group(1) == "00001"


def pick_mmproj(filenames: list[str]) -> str | None:
    """The mmproj to use among ``filenames``: prefer F16 (then BF16, F32, Q8_0), else the first."""
    cands = sorted(f for f in filenames if is_mmproj_name(f))
    for pref in _MMPROJ_PREFERENCE:
        for f in cands:
            if quant_in_name(pref, f):
                return f
    return cands[0] if cands else None


def find_mmproj_beside(model_path: Path) -> Path | None:
    """The mmproj for ``model_path``: its folder manifest's, else ``mmproj*.gguf`` (F16 first)."""
    folder = model_path.parent
    try:
        siblings = sorted(x.name for x in folder.iterdir() if x.is_file())
    except OSError:
        return None
    manifest = read_manifest(folder)
    chosen = None
    if manifest and manifest.get("model_file") == model_path.name:
        chosen = manifest.get("mmproj_file")
    if chosen not in siblings:
        chosen = pick_mmproj(siblings)
    return folder / chosen if chosen else None


@dataclass(frozen=True)
class ModelEntry:
    """One installed model."""

    name: str  # the folder name; what `--model NAME` and /v1/models use
    folder: Path
    model_path: Path  # the text GGUF (first shard if split)
    mmproj_path: Path | None
    quant: str | None
    size_bytes: int  # text GGUF(s) + mmproj on disk
    is_default: bool = False
    repo: str | None = None  # from the manifest
    revision: str | None = None
    source: str | None = None  # "hf", "modelscope" or None (copied by hand)
    note: str | None = None  # e.g. several text GGUFs in one folder

    @property
    def complete(self) -> bool:
        """Has both a text model and an mmproj: can be served."""
        return self.mmproj_path is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "model_path": str(self.model_path),
            "mmproj_path": str(self.mmproj_path) if self.mmproj_path else None,
            "quant": self.quant,
            "size_bytes": self.size_bytes,
            "is_default": self.is_default,
            "repo": self.repo,
            "revision": self.revision,
            "source": self.source,
            "note": self.note,
        }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None if absent or unreadable (then file names decide)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a reader sees the old manifest or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelRegistry:
    """The models folder. Stateless: every call looks at the disk."""

    def __init__(self, models_dir: str | Path) -> None:
        self.models_dir = Path(models_dir).expanduser()

    # ------------------------------------------------------------------ listing

    def list_models(self) -> list[ModelEntry]:
        """Installed models, sorted by name; download staging and hidden folders are skipped."""
        if not self.models_dir.is_dir():
            return []
        entries = []
        for folder in sorted(self.models_dir.iterdir(), key=lambda p: p.name.lower()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            entry = self._entry(folder)
            if entry is not None:
                entries.append(entry)
        return entries

    def partial_downloads(self) -> list[Path]:
        """Staging folders of unfinished pulls (``.partial-NAME``)."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p for p in self.models_dir.iterdir() if p.name.startswith(STAGING_PREFIX))

    def default_model(self) -> ModelEntry:
        """The model flagged default in its manifest, else the first complete one by name."""
        entries = self.list_models()
        complete = [e for e in entries if e.complete]
        for e in complete:
            if e.is_default:
                return e
        if complete:
            return complete[0]
        if entries:
            raise ModelNotFoundError(
                f"{entries[0].name} in {self.models_dir} has no mmproj*.gguf vision projector "
                "beside "
                f"its model file: copy one into {entries[0].folder} or run `vlmserve pull`"
            )
        raise ModelNotFoundError(
            f"no model in {self.models_dir}: run `vlmserve pull` or copy a Qwen3-VL GGUF and its "
            "mmproj*.gguf into a subfolder there"
        )

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name`` (case-insensitive); the error lists the known names."""
        entries = self.list_models()
        for e in entries:
            if e.name == name:
                return e
        matches = [e for e in entries if e.name.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
        known = (
            ", ".join(e.name for e in entries) or f"none (the folder {self.models_dir} is empty)"
        )
        raise ModelNotFoundError(f"unknown model {name!r}; installed: {known}")

    def resolve(
        self, name_or_path: str | Path | None, require_mmproj: bool = True
    ) -> tuple[Path, Path | None]:
        """``(model_path, mmproj_path)`` for a model name, a model folder or a ``.gguf`` path.

        ``None`` means the default model. For a ``.gguf`` path the mmproj is
        looked for beside it (the folder's manifest, else ``mmproj*.gguf``,
        F16 preferred). Raises ``ModelNotFoundError`` when nothing matches or,
        with ``require_mmproj``, when no mmproj is found.
        """
        if name_or_path is None or str(name_or_path) == "":
            e = self.default_model()
            return e.model_path, e.mmproj_path
        text = str(name_or_path)
        p = Path(text).expanduser()
        if not p.exists() and not p.is_absolute() and (self.models_dir / p).exists():
            p = self.models_dir / p  # "NAME/file.gguf" relative to the models folder
        p = p.absolute()  # the engine may chdir; keep symlinks as given
        if p.is_file():
            return self._resolve_file(p, require_mmproj)
        if p.is_dir():
            entry = self._entry(p)
            if entry is None:
                raise ModelNotFoundError(f"no text-model .gguf file in {p}")
            return self._checked(entry, require_mmproj)
        looks_like_path = text.lower().endswith(".gguf") or "/" in text or os.sep in text
        if looks_like_path:
            raise ModelNotFoundError(f"{text}: no such file or folder")
        return self._checked(self.get(text), require_mmproj)

    # ------------------------------------------------------------------ changing

    def set_default(self, name: str) -> ModelEntry:
        """Flag ``name`` as the default (in its manifest) and unflag the others."""
        target = self.get(name)
        if not target.complete:
            raise ModelNotFoundError(f"{target.name} has no mmproj file and cannot be the default")
        for e in self.list_models():
            manifest = read_manifest(e.folder)
            if e.name == target.name:
                manifest = manifest or self._manual_manifest(e)
                manifest["default"] = True
                write_manifest(e.folder, manifest)
            elif manifest is not None and manifest.get("default"):
                manifest["default"] = False
                write_manifest(e.folder, manifest)
        return self.get(target.name)

    def remove(self, name: str) -> Path:
        """Delete the model folder called ``name``; return the path removed."""
        entry = self.get(name)
        folder = entry.folder.resolve()
        if folder.parent != self.models_dir.resolve():
            raise VlmserveError(f"refusing to remove {folder}: it is not inside {self.models_dir}")
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise VlmserveError(f"cannot remove {folder}: {exc.strerror or exc}") from None
        return folder

    # ------------------------------------------------------------------ internals

    def _entry(self, folder: Path) -> ModelEntry | None:
        try:
            ggufs = sorted(
                p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".gguf")
            )
        except OSError:
            return None
        manifest = read_manifest(folder)
        texts = [f for f in ggufs if not is_mmproj_name(f)]
        # A split model is loaded from its first shard; the others are counted in the size.
        firsts = [f for f in texts if _is_loadable_file(f)]
        note = None
        model_file = None
        if manifest and manifest.get("model_file") in ggufs:
            model_file = manifest["model_file"]
        elif firsts:
            model_file = firsts[0]
            if len(firsts) > 1:
                note = (
                    f"{len(firsts)} text GGUFs here; using {model_file} "
                    "(pass a .gguf path to pick another)"
                )
        if model_file is None:
            return None
        mmproj_file = manifest.get("mmproj_file") if manifest else None
        if mmproj_file not in ggufs:
            mmproj_file = pick_mmproj(ggufs)
        model_files = [model_file]
        shard = _SHARD_RE.search(model_file)
        if shard:
            stem = model_file[: shard.start()]
            model_files = [f for f in texts if f.startswith(stem) and _SHARD_RE.search(f)]
        counted = model_files + ([mmproj_file] if mmproj_file else [])
        size = sum((folder / f).stat().st_size for f in counted)
        quant = (
            (manifest or {}).get("quant")
            or quant_from_name(model_file)
            or _quant_from_header(folder / model_file)
        )
        return ModelEntry(
            name=folder.name,
            folder=folder,
            model_path=folder / model_file,
            mmproj_path=folder / mmproj_file if mmproj_file else None,
            quant=quant,
            size_bytes=size,
            is_default=bool((manifest or {}).get("default")),
            repo=(manifest or {}).get("repo"),
            revision=(manifest or {}).get("revision"),
            source=(manifest or {}).get("source"),
            note=note,
        )

    def _resolve_file(self, p: Path, require_mmproj: bool) -> tuple[Path, Path | None]:
        if not p.name.lower().endswith(".gguf"):
            raise ModelNotFoundError(f"{p} is not a .gguf file")
        if is_mmproj_name(p.name):
            raise ModelNotFoundError(
                f"{p.name} is a vision projector (mmproj); give the text model .gguf instead"
            )
        mmproj = find_mmproj_beside(p)
        if mmproj is None and require_mmproj:
            raise ModelNotFoundError(
                f"no mmproj*.gguf vision projector beside {p.name} in {p.parent}: copy the model's "
                "mmproj file there"
            )
        return p, mmproj

    def _checked(self, entry: ModelEntry, require_mmproj: bool) -> tuple[Path, Path | None]:
        if require_mmproj and entry.mmproj_path is None:
            raise ModelNotFoundError(
                f"{entry.name} has no mmproj*.gguf vision projector in {entry.folder}: copy the "
                "model's mmproj file there"
            )
        return entry.model_path, entry.mmproj_path

    @staticmethod
    def _manual_manifest(e: ModelEntry) -> dict[str, Any]:
        # A hand-copied model gets a minimal manifest so it can carry the default flag.
        return {
            "format": MANIFEST_FORMAT,
            "name": e.name,
            "source": None,
            "quant": e.quant,
            "model_file": e.model_path.name,
            "mmproj_file": e.mmproj_path.name if e.mmproj_path else None,
            "files": [],
        }


def _quant_from_header(path: Path) -> str | None:
    # Only for hand-copied files whose names carry no quantization; a bad file lists as unknown.
    from vlmserve.models.gguf_info import read_gguf_info

    try:
        return read_gguf_info(path).file_type
    except ModelLoadError:
        return None


HOW_TO_GET_A_MODEL = (
    "no model given and none found: pass --model FILE.gguf --mmproj MMPROJ.gguf (or set "
    "VLMSERVE_MODEL / VLMSERVE_MMPROJ), download Qwen3-VL-8B-Instruct with `vlmserve pull`, "
    "or write a tiny offline demo model with `vlmserve demo-model DIR` (random weights)"
)


def resolve_model_paths(model: str | None, mmproj: str | None) -> tuple[Path, Path]:
    """Flags, then environment, then the local models folder's default; else a clear error.

    ``model`` may be a .gguf path, a model folder, or a name from ``vlmserve models``.
    """
    model = model or os.environ.get("VLMSERVE_MODEL")
    mmproj = mmproj or os.environ.get("VLMSERVE_MMPROJ")
    registry = ModelRegistry(default_models_dir())
    if mmproj:
        model_path, _ = registry.resolve(model, require_mmproj=False) if model else (None, None)
        if model_path is None:
            raise ModelNotFoundError(HOW_TO_GET_A_MODEL)
        return model_path, Path(mmproj).expanduser()
    if not model and not registry.list_models():
        raise ModelNotFoundError(HOW_TO_GET_A_MODEL)
    return registry.resolve(model)

"""Where ``vlmserve serve`` finds a model when none is named.

A minimal stand-in for ``vlmserve.models.registry`` (written on another branch): it
looks in the models folder that ``vlmserve pull`` fills, ``~/.cache/vlmserve/models``
(``VLMSERVE_MODELS_DIR`` overrides), for a sub-folder holding a text GGUF and an
``mmproj*.gguf``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vlmserve.errors import ModelNotFoundError

HOW_TO_GET_A_MODEL = (
    "run `vlmserve pull` to download Qwen3-VL, or `vlmserve demo-model DIR` for a tiny "
    "offline demo model (random weights), then pass --model and --mmproj (or set "
    "VLMSERVE_MODEL and VLMSERVE_MMPROJ)")


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    mmproj: Path | None


def models_dir() -> Path:
    """``$VLMSERVE_MODELS_DIR``, else ``~/.cache/vlmserve/models``."""
    configured = os.environ.get("VLMSERVE_MODELS_DIR")
    return Path(configured).expanduser() if configured else (
        Path.home() / ".cache" / "vlmserve" / "models")


def is_mmproj(path: Path) -> bool:
    return path.name.lower().startswith("mmproj")


def mmproj_next_to(model: Path) -> Path | None:
    """The vision projector in the model's folder, if exactly one is there."""
    candidates = sorted(p for p in model.parent.glob("*.gguf") if is_mmproj(p))
    return candidates[0] if len(candidates) == 1 else None


def find_in_folder(folder: Path) -> ModelFiles | None:
    """A (text GGUF, mmproj GGUF) pair in ``folder``; the largest text GGUF if several."""
    ggufs = [p for p in folder.glob("*.gguf") if p.is_file()]
    models = [p for p in ggufs if not is_mmproj(p)]
    projectors = sorted(p for p in ggufs if is_mmproj(p))
    if not models or not projectors:
        return None
    model = max(models, key=lambda p: (p.stat().st_size, p.name))
    return ModelFiles(model, projectors[0])


def find_model(root: Path | None = None) -> ModelFiles:
    """The most recently changed complete model folder under ``root`` (default
    ``models_dir()``); ``ModelNotFoundError`` saying how to get one otherwise."""
    root = root or models_dir()
    folders = [p for p in root.glob("*/") if p.is_dir()] if root.is_dir() else []
    found = [f for f in (find_in_folder(p) for p in folders) if f is not None]
    if not found:
        raise ModelNotFoundError(f"no model given and none found in {root}: "
                                 f"{HOW_TO_GET_A_MODEL}")
    return max(found, key=lambda f: f.model.stat().st_mtime)


def resolve(model: Path | None, mmproj: Path | None) -> ModelFiles:
    """The model to serve: the one given (with its mmproj found next to it if not given),
    else the newest one in the models folder."""
    if model is None:
        return find_model()
    model = model.expanduser()
    return ModelFiles(model, mmproj.expanduser() if mmproj else mmproj_next_to(model))

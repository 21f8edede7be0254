"""Model and engine flags shared by the commands that load a model (describe, bench, ...)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vlmserve.cli.settings_flags import add_setting_flags
from vlmserve.config import EngineConfig
from vlmserve.errors import ModelNotFoundError
from vlmserve.models.registry import ModelRegistry, default_models_dir
from vlmserve.settings import engine_config

HOW_TO_GET_A_MODEL = (
    "no model given and none found: pass --model FILE.gguf --mmproj MMPROJ.gguf (or set "
    "VLMSERVE_MODEL / VLMSERVE_MMPROJ), download Qwen3-VL-8B-Instruct with `vlmserve pull`, "
    "or write a tiny offline demo model with `vlmserve demo-model DIR` (random weights)"
)


# The engine settings every command that loads a model shares (serve has them all).
SHARED_ENGINE_SETTINGS = (
    "threads", "threads_vision", "image_cache_dir", "image_slice", "ctx_size",
    "n_gpu_layers", "flash_attn", "image_max_tokens", "image_min_tokens",
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The shared model and engine flags, with the settings table's defaults."""
    add_setting_flags(p, ("model", "mmproj", *SHARED_ENGINE_SETTINGS), use_defaults=True)


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


def engine_config_from_args(args: argparse.Namespace, n_parallel: int = 1) -> EngineConfig:
    """The engine configuration of describe / watch: shared flags, the resolved model."""
    model, mmproj = resolve_model_paths(str(args.model) if args.model else None,
                                        str(args.mmproj) if args.mmproj else None)
    values = {name: getattr(args, name) for name in SHARED_ENGINE_SETTINGS}
    return engine_config(model, mmproj, **values, parallel=n_parallel)

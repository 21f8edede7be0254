"""Model and engine flags shared by the commands that load a model (describe, bench, ...)."""

from __future__ import annotations

import argparse

from vlmserve.cli.settings_flags import add_setting_flags
from vlmserve.config import EngineConfig
from vlmserve.models.registry import resolve_model_paths
from vlmserve.settings import engine_config

# The engine settings every command that loads a model shares (serve has them all).
SHARED_ENGINE_SETTINGS = (
    "threads", "threads_vision", "image_cache_dir", "image_slice", "ctx_size",
    "n_gpu_layers", "flash_attn",
)
# The image-token budget: not the engine's (vlmserve resizes before mtmd), but given
# with the model flags because it trades detail for speed in the same way.
SHARED_IMAGE_SETTINGS = ("image_max_tokens", "image_min_tokens")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The shared model and engine flags, with the settings table's defaults."""
    add_setting_flags(p, ("model", "mmproj", *SHARED_ENGINE_SETTINGS, *SHARED_IMAGE_SETTINGS),
                      use_defaults=True)


def engine_config_from_args(args: argparse.Namespace, n_parallel: int = 1) -> EngineConfig:
    """The engine configuration of describe / watch: shared flags, the resolved model."""
    model, mmproj = resolve_model_paths(str(args.model) if args.model else None,
                                        str(args.mmproj) if args.mmproj else None)
    values = {name: getattr(args, name) for name in SHARED_ENGINE_SETTINGS}
    return engine_config(model, mmproj, **values, parallel=n_parallel)

"""Model and engine flags shared by the commands that load a model (describe, bench, ...)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vlmserve.config import EngineConfig
from vlmserve.errors import ModelNotFoundError
from vlmserve.models.registry import ModelRegistry, default_models_dir

HOW_TO_GET_A_MODEL = (
    "no model given and none found: pass --model FILE.gguf --mmproj MMPROJ.gguf (or set "
    "VLMSERVE_MODEL / VLMSERVE_MMPROJ), download Qwen3-VL-8B-Instruct with `vlmserve pull`, "
    "or write a tiny offline demo model with `vlmserve demo-model DIR` (random weights)"
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="text model GGUF, or a model name from `vlmserve models` "
                   "(env VLMSERVE_MODEL)")
    g.add_argument("--mmproj", help="vision projector GGUF (env VLMSERVE_MMPROJ; default: the "
                   "mmproj*.gguf beside the model)")
    g.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: cores)")
    g.add_argument("--threads-vision", type=int, default=0,
                   help="vision-encoder threads (default: the cores the text model leaves)")
    g.add_argument("--image-cache-dir", type=Path, default=None,
                   help="keep vision embeddings on disk here too (reused across runs)")
    g.add_argument("--image-slice", type=int, default=64,
                   help="most image KV cells per engine step (default 64)")
    g.add_argument("--ctx-size", type=int, default=8192, help="KV cells per slot (default 8192)")
    g.add_argument("--n-gpu-layers", type=int, default=-1,
                   help="layers to offload to the GPU (-1: all the build supports)")
    g.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                   help="text-model flash attention (default auto: on with a GPU, off on CPU)")
    g.add_argument("--image-max-tokens", type=int, default=0,
                   help="cap on vision tokens per image (trade detail for speed)")
    g.add_argument("--image-min-tokens", type=int, default=0, help="floor on vision tokens")


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


def engine_config_from_args(args: argparse.Namespace, n_parallel: int = 1,
                            **overrides: object) -> EngineConfig:
    model, mmproj = resolve_model_paths(args.model, args.mmproj)
    return EngineConfig(
        model_path=model,
        mmproj_path=mmproj,
        n_ctx_per_slot=args.ctx_size,
        n_parallel=n_parallel,
        n_threads=args.threads,
        n_threads_vision=args.threads_vision,
        image_cache_dir=args.image_cache_dir,
        image_slice=args.image_slice,
        n_gpu_layers=args.n_gpu_layers,
        flash_attn=args.flash_attn,
        image_min_tokens=args.image_min_tokens,
        image_max_tokens=args.image_max_tokens,
        **overrides,
    )

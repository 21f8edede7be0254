"""``vlmserve info FILE.gguf [--mmproj F] [--ctx N] [--parallel N] [--json]``.

Describes a GGUF from its header (nothing is loaded into llama.cpp): architecture,
quantization, parameters, size, layer and head dimensions, the vision tower of
the mmproj, whether the pair would pass the pre-load checks, and the memory
needed at the given context next to the memory available.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time to keep `vlmserve --help` fast
    from vlmserve.models.gguf_info import GGUFInfo
    from vlmserve.models.memory import AvailableMemory, MemoryEstimate


def _serve_defaults() -> dict[str, Any]:
    # The estimate defaults to what `vlmserve serve` would allocate by default.
    from dataclasses import fields

    from vlmserve.config import EngineConfig

    return {f.name: f.default for f in fields(EngineConfig)}


def register(subparsers: argparse._SubParsersAction) -> None:
    d = _serve_defaults()
    p = subparsers.add_parser(
        "info",
        help="describe a GGUF model (+ mmproj) and the memory it needs",
        description=(
            "Read a GGUF header and print what it is and how much memory serving it takes. "
            "FILE may also be an installed model's name or folder; its mmproj is then found "
            "beside it."
        ),
    )
    p.add_argument("file", metavar="FILE", help="a .gguf file, a model folder, or a model name")
    p.add_argument("--mmproj", type=Path, default=None, help="the vision projector GGUF")
    p.add_argument(
        "--ctx",
        type=int,
        default=d["n_ctx_per_slot"],
        help=f"context per slot, in tokens (default {d['n_ctx_per_slot']}, as serve)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=d["n_parallel"],
        help=f"slots (default {d['n_parallel']}, as serve)",
    )
    p.add_argument(
        "--image-cache-mb",
        type=int,
        default=d["image_cache_mb"],
        help=f"image cache budget in MiB (default {d['image_cache_mb']}, as serve)",
    )
    p.add_argument("--no-flash-attn", action="store_true", help="estimate without flash attention")
    p.add_argument("--dir", type=Path, default=None, help="models folder, to resolve a model name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmserve.errors import ModelLoadError, VlmserveError
    from vlmserve.models.gguf_info import read_gguf_info, validate_model_pair
    from vlmserve.models.memory import available_memory, estimate_memory
    from vlmserve.models.registry import (
        ModelRegistry,
        default_models_dir,
        find_mmproj_beside,
        is_mmproj_name,
    )

    if args.ctx < 1 or args.parallel < 1 or args.image_cache_mb < 0:
        raise VlmserveError("--ctx and --parallel must be >= 1, --image-cache-mb >= 0")
    model_path = Path(args.file).expanduser()
    mmproj_path = args.mmproj
    if model_path.is_file():
        # Any file is described as given; a model's mmproj is looked for beside it.
        if mmproj_path is None and not is_mmproj_name(model_path.name):
            mmproj_path = find_mmproj_beside(model_path.absolute())
    else:
        # An installed model's name or folder.
        reg = ModelRegistry(args.dir if args.dir is not None else default_models_dir())
        model_path, beside = reg.resolve(args.file, require_mmproj=False)
        mmproj_path = mmproj_path or beside

    model = read_gguf_info(model_path)
    mmproj = read_gguf_info(mmproj_path) if mmproj_path is not None else None
    problem = None
    if model.is_clip:
        problem = "this is a vision projector; give the text model as FILE and this as --mmproj"
    elif mmproj is None:
        problem = "no mmproj given or found beside the model: images cannot be served"
    else:
        try:
            validate_model_pair(model.path, mmproj.path)
        except ModelLoadError as exc:
            problem = exc.message

    estimate = None
    if not model.is_clip:
        try:
            estimate = estimate_memory(
                model,
                mmproj,
                n_ctx=args.ctx,
                n_parallel=args.parallel,
                image_cache_mb=args.image_cache_mb,
                flash_attn=not args.no_flash_attn,
            )
        except (ModelLoadError, ValueError) as exc:
            problem = problem or str(exc)
    available = available_memory()

    if args.json:
        out: dict[str, Any] = {
            "model": model.to_dict(),
            "mmproj": mmproj.to_dict() if mmproj else None,
            "ready_to_serve": problem is None,
            "problem": problem,
            "memory": estimate.to_dict() if estimate else None,
            "available": {
                "ram_bytes": available.ram_bytes,
                "ram_source": available.ram_source,
                "vram_bytes": available.vram_bytes,
            },
        }
        print(json.dumps(out, indent=2, default=str))
        return 0
    for line in _describe(model, mmproj, estimate, available, problem):
        print(line)
    return 0


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _describe(
    model: GGUFInfo,
    mmproj: GGUFInfo | None,
    estimate: MemoryEstimate | None,
    available: AvailableMemory,
    problem: str | None,
) -> list[str]:
    from vlmserve.models.memory import fmt_bytes

    lines = [f"model      {model.path}"]
    lines += _file_lines(model)
    if not model.is_clip:
        lines.append(
            f"  shape          {model.n_layer} layers, embedding {model.n_embd}, FFN {model.n_ff}, "
            f"heads {model.n_head} (KV {model.n_head_kv}), "
            f"head dim {model.key_length}/{model.value_length}"
        )
        if model.rope_sections is not None:
            lines.append(
                f"  M-RoPE         sections {list(model.rope_sections)}, "
                f"deepstack layers {model.n_deepstack_layers}"
            )
        lines.append(f"  context        {model.context_length} tokens (training)")
        lines.append(f"  vocabulary     {model.vocab_size}")
        lines.append(f"  chat template  {'yes' if model.has_chat_template else 'no'}")
    else:
        lines += _vision_lines(model)
    if mmproj is not None:
        lines.append(f"mmproj     {mmproj.path}")
        lines += _file_lines(mmproj)
        lines += _vision_lines(mmproj)
    for info in (model, mmproj):
        for w in info.warnings if info is not None else ():
            lines.append(f"warning: {info.path.name}: {w}")
    lines.append("serve check: " + ("ok" if problem is None else f"PROBLEM: {problem}"))
    if estimate is not None:
        slots = "slot" if estimate.n_parallel == 1 else "slots"
        lines.append(
            f"memory at {estimate.n_ctx} tokens x {estimate.n_parallel} {slots} "
            f"({estimate.kv_cells} KV cells, {estimate.kv_type}, "
            f"flash attention {'on' if estimate.flash_attn else 'off'}):"
        )
        lines.append(f"  weights        {fmt_bytes(estimate.weights_bytes)}")
        if estimate.mmproj_bytes:
            lines.append(f"  mmproj         {fmt_bytes(estimate.mmproj_bytes)}")
        lines.append(f"  KV cache       {fmt_bytes(estimate.kv_bytes)}")
        lines.append(f"  compute        ~{fmt_bytes(estimate.compute_bytes)} (heuristic)")
        if estimate.image_cache_bytes:
            lines.append(f"  image cache    {fmt_bytes(estimate.image_cache_bytes)}")
        lines.append(f"  total          {fmt_bytes(estimate.total)}")
    ram = fmt_bytes(available.ram_bytes) if available.ram_bytes is not None else "unknown"
    gpu = fmt_bytes(available.vram_bytes) if available.vram_bytes is not None else "no NVIDIA GPU"
    lines.append(f"available: RAM {ram} ({available.ram_source or 'n/a'}), GPU {gpu}")
    return lines


def _file_lines(info: GGUFInfo) -> list[str]:
    from vlmserve.models.memory import fmt_bytes

    quant = info.file_type or "unknown"
    if info.file_type_from_tensors:
        quant += " (from tensor types; no general.file_type)"
    name = f" ({info.name})" if info.name else ""
    return [
        f"  architecture   {info.architecture}{name}",
        f"  quantization   {quant}",
        f"  parameters     {_count(info.parameter_count)} in {len(info.tensors)} tensors",
        f"  file size      {fmt_bytes(info.file_size)} (GGUF v{info.gguf_version})",
    ]


def _vision_lines(info: GGUFInfo) -> list[str]:
    v = info.vision
    if v is None:
        return []
    return [
        f"  projector      {v.projector_type} "
        f"(vision encoder: {'yes' if v.has_vision_encoder else 'no'})",
        f"  vision         {v.block_count} layers, embedding {v.embedding_length}, "
        f"FFN {v.feed_forward_length}, heads {v.head_count}, patch {v.patch_size}, "
        f"image {v.image_size}, merge {v.spatial_merge_size}",
        f"  projects to    {v.projector_output_dim or v.projection_dim} dims, "
        f"deepstack layers {list(v.deepstack_layers)}",
    ]

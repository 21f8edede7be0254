"""Checks before llama.cpp sees a model: the files, their pairing, and whether they fit.

Some malformed GGUF files abort or crash the whole process inside llama.cpp
(missing ``v.patch_embd.bias`` or ``.weight.1``, rope sections larger than the
head dimension), and an oversized context gets the process killed by the OOM
killer. Both must be one clear line instead, so they are checked here first.
"""

from __future__ import annotations

from vlmserve.config import EngineConfig
from vlmserve.models.gguf_info import (
    GGUFInfo,
    read_gguf_info,
    validate_model_pair,
    validate_text_model,
)
from vlmserve.models.memory import available_memory, check_fit, estimate_memory


def preflight(config: EngineConfig, gpu_offload: bool) -> tuple[GGUFInfo, GGUFInfo | None]:
    """Validate the files and the memory fit; return their GGUF infos.

    ``gpu_offload``: whether this llama.cpp build offloads to a GPU (then the
    weights and KV must fit in free GPU memory instead of RAM).
    """
    if config.mmproj_path is not None:
        model, mmproj = validate_model_pair(config.model_path, config.mmproj_path)
    else:
        model, mmproj = read_gguf_info(config.model_path), None
        validate_text_model(model)
    if config.check_memory:
        estimate = estimate_memory(model, mmproj, n_ctx=config.n_ctx_per_slot,
                                   n_parallel=config.n_parallel,
                                   image_cache_mb=config.image_cache_mb,
                                   n_ubatch=config.n_batch,
                                   flash_attn=config.use_flash_attn(gpu_offload))
        check_fit(estimate, available_memory(),
                  use_gpu=gpu_offload and config.n_gpu_layers != 0)
    return model, mmproj

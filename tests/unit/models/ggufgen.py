"""Write small fake Qwen3-VL text and mmproj GGUF files, deliberately broken on request.

The keys and tensor names come from ``vlmserve.models.qwen3vl_gguf``, the writer the
demo models use (one spelling of every Qwen3-VL key); this file only chooses the
values, the knobs that break one rule, and fills tensors with random (or random
quantized) bytes, enough for the header checks to have something real to look at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from vlmserve.models.qwen3vl_gguf import (
    add_text_metadata,
    add_tokenizer,
    add_vision_metadata,
    text_tensors,
    vision_tensors,
)

_RNG = np.random.default_rng(0)


def _f16(*shape: int) -> np.ndarray:
    # numpy shape is the reverse of ggml's: (rows=out, cols=in)
    return _RNG.standard_normal(shape).astype(np.float16)


def _f32(*shape: int) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


def _quant(qtype: GGMLQuantizationType, rows: int, cols: int) -> np.ndarray:
    # Random bytes in the quant's byte layout; GGUFWriter derives the element shape.
    block, type_size = GGML_QUANT_SIZES[qtype]
    assert cols % block == 0
    return _RNG.integers(0, 255, size=(rows, cols // block * type_size), dtype=np.uint8)


def write_text_gguf(
    path: Path,
    *,
    arch: str = "qwen3vl",
    name: str = "Fake Qwen3-VL",
    n_embd: int = 256,
    n_layer: int = 4,
    n_head: int = 4,
    n_head_kv: int = 2,
    head_dim: int = 64,
    n_ff: int = 512,
    n_vocab: int = 64,
    context_length: int = 4096,
    rope_sections: list[int] | None = None,
    n_deepstack: int | None = 3,
    chat_template: bool = True,
    file_type: LlamaFileType | None = LlamaFileType.MOSTLY_F16,
    weight_type: GGMLQuantizationType = GGMLQuantizationType.F16,
    layer_tensors: bool = True,
) -> Path:
    """A qwen3vl-like text model; returns ``path``.

    ``layer_tensors=False`` writes the metadata of any shape (e.g. the real 8B)
    with only two tiny tensors, for tests that only read the header.
    """
    if rope_sections is None:
        rope_sections = [head_dim // 8, head_dim // 8, head_dim // 8, 0]  # sum = 3/8 head_dim
    w = GGUFWriter(path, arch)
    add_text_metadata(
        w, name=name, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=n_ff, context_length=context_length,
        rope_sections=None if rope_sections is False else rope_sections,
        n_deepstack=n_deepstack, file_type=file_type)
    add_tokenizer(
        w, [f"t{i}" for i in range(n_vocab)], ["t 1"],
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}" if chat_template
        else None)
    if not layer_tensors:
        w.add_tensor("token_embd.weight", _f16(n_vocab, 8))
        w.add_tensor("output_norm.weight", _f32(8))
    else:
        specs = text_tensors(n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                             n_head_kv=n_head_kv, head_dim=head_dim, n_ff=n_ff, tied=True)
        for tname, shape, _ in specs:
            if len(shape) == 1:
                w.add_tensor(tname, _f32(*shape))
            elif weight_type == GGMLQuantizationType.F16 or tname == "token_embd.weight":
                w.add_tensor(tname, _f16(*shape))
            else:
                w.add_tensor(tname, _quant(weight_type, *shape), raw_dtype=weight_type)
    _finish(w)
    return path


def write_mmproj_gguf(
    path: Path,
    *,
    projector_type: str | None = "qwen3vl_merger",
    has_vision_encoder: bool = True,
    v_embd: int = 32,
    v_layers: int = 4,
    v_heads: int = 2,
    v_ff: int = 64,
    image_size: int = 64,
    patch_size: int = 16,
    text_embd: int = 256,
    projection_dim: int | None = None,
    deepstack_layers: tuple[int, ...] = (1, 2, 3),
    omit_tensors: tuple[str, ...] = (),
    omit_keys: tuple[str, ...] = (),
) -> Path:
    """A Qwen3-VL-like mmproj (``clip``) whose projector outputs ``text_embd`` dims."""
    w = GGUFWriter(path, "clip")
    dims = dict(image_size=image_size, patch_size=patch_size, v_embd=v_embd, v_ff=v_ff,
                v_layer=v_layers, deepstack=deepstack_layers)
    add_vision_metadata(
        w, name=None, v_head=v_heads, projector_type=projector_type,
        has_vision_encoder=has_vision_encoder, omit_keys=omit_keys,
        projection_dim=projection_dim if projection_dim is not None else text_embd, **dims)
    for tname, shape, init in vision_tensors(n_embd=text_embd, **dims):
        if tname not in omit_tensors:
            w.add_tensor(tname, _f16(*shape) if init == "matrix" else _f32(*shape))
    _finish(w)
    return path


def _finish(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

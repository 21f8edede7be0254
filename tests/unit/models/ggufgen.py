"""Write small fake Qwen3-VL text and mmproj GGUF files with ``gguf.GGUFWriter``.

The metadata follows what llama.cpp reads for Qwen3-VL (see LLAMACPP-NOTES);
the tensors are random and few, only enough for the header checks to have
something real to look at. Every knob that a validation rule looks at is a
keyword, so a test breaks exactly one thing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

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
    w.add_name(name)
    if file_type is not None:
        w.add_file_type(int(file_type))
    w.add_uint32(f"{arch}.block_count", n_layer)
    w.add_uint32(f"{arch}.context_length", context_length)
    w.add_uint32(f"{arch}.embedding_length", n_embd)
    w.add_uint32(f"{arch}.feed_forward_length", n_ff)
    w.add_uint32(f"{arch}.attention.head_count", n_head)
    w.add_uint32(f"{arch}.attention.head_count_kv", n_head_kv)
    w.add_uint32(f"{arch}.attention.key_length", head_dim)
    w.add_uint32(f"{arch}.attention.value_length", head_dim)
    w.add_float32(f"{arch}.rope.freq_base", 5_000_000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    if rope_sections is not False:
        w.add_array(f"{arch}.rope.dimension_sections", [int(x) for x in rope_sections])
    if n_deepstack is not None:
        w.add_uint32(f"{arch}.n_deepstack_layers", n_deepstack)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "qwen2")
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(n_vocab)])
    w.add_array("tokenizer.ggml.merges", ["t 1"])
    if chat_template:
        w.add_string(
            "tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"
        )

    def weight(name: str, rows: int, cols: int) -> None:
        if weight_type == GGMLQuantizationType.F16:
            w.add_tensor(name, _f16(rows, cols))
        else:
            w.add_tensor(name, _quant(weight_type, rows, cols), raw_dtype=weight_type)

    kv = n_head_kv * head_dim
    if not layer_tensors:
        w.add_tensor("token_embd.weight", _f16(n_vocab, 8))
        w.add_tensor("output_norm.weight", _f32(8))
    else:
        w.add_tensor("token_embd.weight", _f16(n_vocab, n_embd))
        w.add_tensor("output_norm.weight", _f32(n_embd))
    for i in range(n_layer if layer_tensors else 0):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", _f32(n_embd))
        weight(f"{b}.attn_q.weight", n_head * head_dim, n_embd)
        weight(f"{b}.attn_k.weight", kv, n_embd)
        weight(f"{b}.attn_v.weight", kv, n_embd)
        weight(f"{b}.attn_output.weight", n_embd, n_head * head_dim)
        w.add_tensor(f"{b}.attn_q_norm.weight", _f32(head_dim))
        w.add_tensor(f"{b}.attn_k_norm.weight", _f32(head_dim))
        w.add_tensor(f"{b}.ffn_norm.weight", _f32(n_embd))
        weight(f"{b}.ffn_gate.weight", n_ff, n_embd)
        weight(f"{b}.ffn_up.weight", n_ff, n_embd)
        weight(f"{b}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
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
    w.add_file_type(int(LlamaFileType.MOSTLY_F16))
    w.add_bool("clip.has_vision_encoder", has_vision_encoder)
    if projector_type is not None:
        w.add_string("clip.projector_type", projector_type)
    w.add_bool("clip.use_gelu", True)
    keys = {
        "image_size": image_size,
        "patch_size": patch_size,
        "embedding_length": v_embd,
        "feed_forward_length": v_ff,
        "block_count": v_layers,
        "attention.head_count": v_heads,
        "projection_dim": projection_dim if projection_dim is not None else text_embd,
        "spatial_merge_size": 2,
    }
    for k, val in keys.items():
        if k not in omit_keys:
            w.add_uint32(f"clip.vision.{k}", val)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    merged = v_embd * 4  # 2x2 spatial merge
    n_pos = (image_size // patch_size) ** 2
    tensors: dict[str, np.ndarray] = {
        "v.patch_embd.weight": _f16(v_embd, 3, patch_size, patch_size),
        "v.patch_embd.weight.1": _f16(v_embd, 3, patch_size, patch_size),
        "v.patch_embd.bias": _f32(v_embd),
        "v.position_embd.weight": _f16(n_pos, v_embd),
    }
    for i in range(v_layers):
        b = f"v.blk.{i}"
        tensors[f"{b}.ln1.weight"] = _f32(v_embd)
        tensors[f"{b}.attn_qkv.weight"] = _f16(3 * v_embd, v_embd)
        tensors[f"{b}.attn_out.weight"] = _f16(v_embd, v_embd)
        tensors[f"{b}.ffn_up.weight"] = _f16(v_ff, v_embd)
        tensors[f"{b}.ffn_down.weight"] = _f16(v_embd, v_ff)
    tensors["mm.0.weight"] = _f16(merged, merged)
    tensors["mm.0.bias"] = _f32(merged)
    tensors["mm.2.weight"] = _f16(text_embd, merged)
    tensors["mm.2.bias"] = _f32(text_embd)
    for layer in deepstack_layers:
        d = f"v.deepstack.{layer}"
        tensors[f"{d}.norm.weight"] = _f32(merged)
        tensors[f"{d}.fc1.weight"] = _f16(merged, merged)
        tensors[f"{d}.fc2.weight"] = _f16(text_embd, merged)
    for name, arr in tensors.items():
        if name not in omit_tensors:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path

"""The one place that writes Qwen3-VL's GGUF metadata keys and names its tensors.

The demo model writer (``models/demo.py``) and the tests that need deliberately
broken files both go through these functions, so a key llama.cpp reads for
Qwen3-VL is spelled once. Every argument that a validation rule looks at is a
keyword, and ``None`` leaves that key out: a test breaks exactly one thing.

Tensor lists come as ``(name, shape, init)``; ``init`` says how a random writer
fills it ("matrix": F16 weights, "vector": small F32 values, "ones": F32 ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import gguf

ARCH = "qwen3vl"  # the text model's general.architecture
PROJECTOR_TYPE = "qwen3vl_merger"
TensorSpec = tuple[str, tuple[int, ...], str]


def add_text_metadata(writer: gguf.GGUFWriter, *, name: str, n_embd: int, n_layer: int,
                      n_head: int, n_head_kv: int, head_dim: int, n_ff: int,
                      context_length: int, rope_sections: Sequence[int] | None,
                      n_deepstack: int | None,
                      file_type: int | None = gguf.LlamaFileType.MOSTLY_F16,
                      rope_freq_base: float = 5_000_000.0, rms_eps: float = 1e-6) -> None:
    """The text model's keys, under ``writer.arch`` (``qwen3vl`` unless a test wants another)."""
    writer.add_name(name)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_block_count(n_layer)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_freq_base)
    writer.add_layer_norm_rms_eps(rms_eps)
    if rope_sections is not None:
        writer.add_array(f"{writer.arch}.rope.dimension_sections", [int(x) for x in rope_sections])
    if n_deepstack is not None:
        writer.add_uint32(f"{writer.arch}.n_deepstack_layers", n_deepstack)


def add_tokenizer(writer: gguf.GGUFWriter, tokens: Sequence[str], merges: Sequence[str], *,
                  token_types: Sequence[int] | None = None, eos_id: int | None = None,
                  bos_id: int | None = None, chat_template: str | None = None) -> None:
    """llama.cpp's ``gpt2`` tokenizer with the ``qwen2`` pre-tokenizer (BOS never added)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(list(tokens))
    if token_types is not None:
        writer.add_token_types(list(token_types))
    writer.add_token_merges(list(merges))
    if eos_id is not None:
        writer.add_eos_token_id(eos_id)
    if bos_id is not None:
        writer.add_bos_token_id(bos_id)
        writer.add_pad_token_id(bos_id)
        writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def text_tensors(*, n_vocab: int, n_embd: int, n_layer: int, n_head: int, n_head_kv: int,
                 head_dim: int, n_ff: int, tied: bool = False) -> list[TensorSpec]:
    """The text model's tensors in file order; ``tied`` leaves out ``output`` (= token_embd)."""
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    out: list[TensorSpec] = [("token_embd.weight", (n_vocab, n_embd), "matrix")]
    if not tied:
        out.append(("output.weight", (n_vocab, n_embd), "matrix"))
    out.append(("output_norm.weight", (n_embd,), "ones"))
    for i in range(n_layer):
        p = f"blk.{i}"
        out += [
            (f"{p}.attn_norm.weight", (n_embd,), "ones"),
            (f"{p}.attn_q.weight", (q_dim, n_embd), "matrix"),
            (f"{p}.attn_k.weight", (kv_dim, n_embd), "matrix"),
            (f"{p}.attn_v.weight", (kv_dim, n_embd), "matrix"),
            (f"{p}.attn_output.weight", (n_embd, q_dim), "matrix"),
            (f"{p}.attn_q_norm.weight", (head_dim,), "ones"),
            (f"{p}.attn_k_norm.weight", (head_dim,), "ones"),
            (f"{p}.ffn_norm.weight", (n_embd,), "ones"),
            (f"{p}.ffn_gate.weight", (n_ff, n_embd), "matrix"),
            (f"{p}.ffn_up.weight", (n_ff, n_embd), "matrix"),
            (f"{p}.ffn_down.weight", (n_embd, n_ff), "matrix"),
        ]
    return out


def add_vision_metadata(writer: gguf.GGUFWriter, *, name: str | None, image_size: int,
                        patch_size: int, v_embd: int, v_ff: int, v_layer: int, v_head: int,
                        projection_dim: int, deepstack: Sequence[int], spatial_merge: int = 2,
                        projector_type: str | None = PROJECTOR_TYPE,
                        has_vision_encoder: bool = True, omit_keys: Sequence[str] = (),
                        file_type: int = gguf.LlamaFileType.MOSTLY_F16) -> None:
    """The mmproj (``clip``) keys; ``omit_keys`` names ``clip.vision.*`` suffixes to leave out."""
    if name is not None:
        writer.add_name(name)
    writer.add_file_type(int(file_type))
    writer.add_bool("clip.has_vision_encoder", has_vision_encoder)
    writer.add_bool("clip.has_text_encoder", False)
    if projector_type is not None:
        writer.add_string("clip.projector_type", projector_type)
    writer.add_bool("clip.use_gelu", True)  # else llama.cpp silently uses gelu_quick
    counts = {
        "image_size": image_size, "patch_size": patch_size, "embedding_length": v_embd,
        "feed_forward_length": v_ff, "block_count": v_layer, "attention.head_count": v_head,
        "projection_dim": projection_dim, "spatial_merge_size": spatial_merge,
    }
    for key, value in counts.items():
        if key not in omit_keys:
            writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.is_deepstack_layers", [i in deepstack for i in range(v_layer)])


def vision_tensors(*, image_size: int, patch_size: int, v_embd: int, v_ff: int, v_layer: int,
                   n_embd: int, deepstack: Sequence[int], spatial_merge: int = 2,
                   ) -> list[TensorSpec]:
    """The projector's tensors in file order (Qwen's Conv3d stored as two temporal halves)."""
    d, merged = v_embd, v_embd * spatial_merge * spatial_merge
    conv = (d, 3, patch_size, patch_size)
    n_pos = (image_size // patch_size) ** 2
    out: list[TensorSpec] = [
        ("v.patch_embd.weight", conv, "matrix"),
        ("v.patch_embd.weight.1", conv, "matrix"),
        ("v.patch_embd.bias", (d,), "vector"),
        ("v.position_embd.weight", (n_pos, d), "vector"),
    ]
    for i in range(v_layer):
        p = f"v.blk.{i}"
        out += [
            (f"{p}.ln1.weight", (d,), "ones"), (f"{p}.ln1.bias", (d,), "vector"),
            (f"{p}.attn_qkv.weight", (3 * d, d), "matrix"),
            (f"{p}.attn_qkv.bias", (3 * d,), "vector"),
            (f"{p}.attn_out.weight", (d, d), "matrix"), (f"{p}.attn_out.bias", (d,), "vector"),
            (f"{p}.ln2.weight", (d,), "ones"), (f"{p}.ln2.bias", (d,), "vector"),
            (f"{p}.ffn_up.weight", (v_ff, d), "matrix"),
            (f"{p}.ffn_up.bias", (v_ff,), "vector"),
            (f"{p}.ffn_down.weight", (d, v_ff), "matrix"),
            (f"{p}.ffn_down.bias", (d,), "vector"),
        ]
    out += [
        ("v.post_ln.weight", (d,), "ones"), ("v.post_ln.bias", (d,), "vector"),
        ("mm.0.weight", (merged, merged), "matrix"), ("mm.0.bias", (merged,), "vector"),
        ("mm.2.weight", (n_embd, merged), "matrix"), ("mm.2.bias", (n_embd,), "vector"),
    ]
    for layer in deepstack:
        p = f"v.deepstack.{layer}"
        out += [
            (f"{p}.norm.weight", (merged,), "ones"), (f"{p}.norm.bias", (merged,), "vector"),
            (f"{p}.fc1.weight", (merged, merged), "matrix"),
            (f"{p}.fc1.bias", (merged,), "vector"),
            (f"{p}.fc2.weight", (n_embd, merged), "matrix"),
            (f"{p}.fc2.bias", (n_embd,), "vector"),
        ]
    return out

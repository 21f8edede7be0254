"""Writes random-weight Qwen3-VL GGUF pairs that llama.cpp loads and runs for real.

No model weights can be downloaded where this project is built and tested, so
tests, the offline demo and the benchmarks run on models written here: the
same architecture (text ``qwen3vl`` with M-RoPE sections, q/k norms and
deepstack inputs; projector ``qwen3vl_merger`` with patch 16, 2x2 spatial
merge and deepstack layers), the same metadata keys and tensor names as the
published Qwen3-VL-8B-Instruct GGUF files, only smaller and random. Output is
gibberish; every invariant (determinism, cache equivalence, limits, formats)
still holds and is what the tests check.

Weights are deterministic for a given ``seed``. Special tokens get zero rows
in the output matrix so a random model never "chooses" to emit control tokens
such as ``<|im_end|>`` under greedy decoding (their logit is exactly 0 while
the best ordinary token's is positive); generation ends at max_tokens or at a
stop string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from vlmserve.chat_template import QWEN3VL_CHAT_TEMPLATE
from vlmserve.errors import VlmserveError
from vlmserve.models.demo_tokenizer import TOKEN_NORMAL, Vocabulary, build_vocabulary

TEXT_FILE = "model.gguf"
ARCH = "qwen3vl"  # the text model's general.architecture
MMPROJ_FILE = "mmproj.gguf"


@dataclass(frozen=True)
class DemoShape:
    """Dimensions of a demo model (text decoder + vision tower)."""

    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rope_sections: tuple[int, int, int, int]  # sums to head_dim / 2
    v_embd: int
    v_layer: int
    v_head: int
    v_ff: int
    v_deepstack: tuple[int, ...]  # vision layers feeding deepstack inputs
    n_merges: int = 600
    context_length: int = 32768

    def __post_init__(self) -> None:
        if sum(self.rope_sections) != self.head_dim // 2:
            raise ValueError("rope sections must sum to head_dim / 2")
        if self.v_embd % self.v_head or (self.v_embd // self.v_head) % 4:
            raise ValueError("vision head dim must be a multiple of 4 (M-RoPE sections)")
        if self.n_layer <= len(self.v_deepstack):
            # llama.cpp's qwen3vl graph adds a deepstack input (one row per token) after
            # the last layer kept only the output rows: GGML_ASSERT(ggml_can_repeat)
            # aborts the process at the first decode that wants fewer outputs than tokens.
            raise ValueError("the text model needs more layers than deepstack layers")


# Named sizes. "8b-layers" has the real Qwen3-VL-8B per-layer dimensions (text
# 4096 / 12288 FF / 32 heads / 8 KV heads; vision 1152 / 4304 FF / 16 heads)
# with fewer layers, so a step's matmul shapes and KV-per-layer match the real
# model while the file stays a few GB.
SHAPES: dict[str, DemoShape] = {
    "tiny": DemoShape("tiny", n_embd=256, n_layer=4, n_head=4, n_head_kv=2, head_dim=64,
                      n_ff=512, rope_sections=(12, 10, 10, 0),
                      v_embd=64, v_layer=4, v_head=2, v_ff=128, v_deepstack=(1, 2, 3)),
    "small": DemoShape("small", n_embd=1024, n_layer=12, n_head=16, n_head_kv=4, head_dim=64,
                       n_ff=3072, rope_sections=(12, 10, 10, 0),
                       v_embd=256, v_layer=8, v_head=4, v_ff=1024, v_deepstack=(2, 4, 6)),
    "medium": DemoShape("medium", n_embd=2048, n_layer=16, n_head=16, n_head_kv=8,
                        head_dim=128, n_ff=6144, rope_sections=(24, 20, 20, 0),
                        v_embd=512, v_layer=12, v_head=8, v_ff=2048, v_deepstack=(3, 6, 9)),
    "8b-layers": DemoShape("8b-layers", n_embd=4096, n_layer=8, n_head=32, n_head_kv=8,
                           head_dim=128, n_ff=12288, rope_sections=(24, 20, 20, 0),
                           v_embd=1152, v_layer=6, v_head=16, v_ff=4304,
                           v_deepstack=(1, 3, 5)),
}

# Vision constants shared with the real Qwen3-VL projector.
PATCH_SIZE = 16
SPATIAL_MERGE = 2
IMAGE_SIZE = 768  # learned position embeddings: (768/16)^2 = 2304 rows, as in Qwen3-VL


@dataclass(frozen=True)
class DemoModelFiles:
    """Paths of a written demo pair."""

    model: Path
    mmproj: Path


class _Weights:
    """Deterministic random tensors (float16 matrices, float32 norms and biases)."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        # std 1/sqrt(cols) keeps activations O(1) through random layers.
        scale = np.float32(1.0 / np.sqrt(cols))
        return (self._rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(
            np.float16)

    def vector(self, n: int, scale: float = 0.02) -> np.ndarray:
        return self._rng.standard_normal(n, dtype=np.float32) * np.float32(scale)

    @staticmethod
    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)


def write_demo_model(out_dir: str | Path, size: str | DemoShape = "tiny", seed: int = 0,
                     quant: str | None = None) -> DemoModelFiles:
    """Write ``model.gguf`` and ``mmproj.gguf`` into ``out_dir``; return their paths.

    ``size`` names one of :data:`SHAPES` or is a :class:`DemoShape` itself
    (e.g. ``dataclasses.replace(SHAPES["8b-layers"], n_layer=2)``).
    ``quant`` ("Q8_0", "Q4_K_M", ...) additionally quantizes the text model with
    llama.cpp's own quantizer (the F16 original is replaced).
    """
    if isinstance(size, DemoShape):
        shape = size
    elif size in SHAPES:
        shape = SHAPES[size]
    else:
        raise VlmserveError(f"unknown demo model size {size!r}; choose one of {', '.join(SHAPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = DemoModelFiles(out / TEXT_FILE, out / MMPROJ_FILE)
    _write_text_model(files.model, shape, seed)
    _write_mmproj(files.mmproj, shape, seed + 1)
    if quant:
        # Imported here: quantizing is the one writer step that needs llama.cpp.
        from vlmserve.engine.llamacpp.quantize import quantize_gguf

        tmp = out / f"{TEXT_FILE}.f16.tmp"
        files.model.replace(tmp)
        try:
            quantize_gguf(tmp, files.model, quant)
        finally:
            tmp.unlink(missing_ok=True)
    return files


def _write_text_model(path: Path, s: DemoShape, seed: int) -> None:
    vocab = build_vocabulary(s.n_merges)
    n_vocab = len(vocab.tokens)
    w = _Weights(seed)
    writer = gguf.GGUFWriter(str(path), ARCH)
    _add_text_metadata(writer, s)
    _add_tokenizer(writer, vocab)
    special = np.array([t != TOKEN_NORMAL for t in vocab.token_types])
    for name, shape in _text_tensor_shapes(s, n_vocab):
        if len(shape) == 1:
            writer.add_tensor(name, w.ones(shape[0]))
            continue
        matrix = w.matrix(*shape)
        if name == "output.weight":
            matrix[special] = 0  # see module docstring: control tokens never win greedily
        writer.add_tensor(name, matrix)
    _finish(writer)


def write_text_header(path: str | Path, s: DemoShape, n_vocab: int | None = None) -> Path:
    """Write ``s``'s text GGUF with its metadata and tensor table but no tensor data.

    The file is extended to its full length as a *sparse* file (the data reads
    as zeros and takes no disk space), so header readers (``read_gguf_info``,
    ``estimate_memory``) see what they would see in a complete model: for
    shapes too large to write for real, such as the 36-layer Qwen3-VL-8B
    (16 GB in F16). With the demo tokenizer llama.cpp also loads it: all
    weights zero, useless for generating text but exact for measuring the
    memory llama.cpp allocates, and written in milliseconds instead of
    seconds per GB.

    ``n_vocab``: rows of ``token_embd`` / ``output`` (the real Qwen3-VL
    vocabulary has 151,936); when given, no tokenizer is written (llama.cpp
    cannot load the file) and readers take the vocabulary size from
    ``token_embd``. Default: the demo vocabulary and tokenizer.
    """
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), ARCH)
    _add_text_metadata(writer, s)
    if n_vocab is None:
        vocab = build_vocabulary(s.n_merges)
        _add_tokenizer(writer, vocab)
        n_vocab = len(vocab.tokens)
    align = writer.data_alignment
    data_bytes = 0
    for name, shape in _text_tensor_shapes(s, n_vocab):
        dtype = np.dtype(np.float32 if len(shape) == 1 else np.float16)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        writer.add_tensor_info(name, shape, dtype, nbytes)
        data_bytes += gguf.GGUFWriter.ggml_pad(nbytes, align)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = gguf.GGUFWriter.ggml_pad(path.stat().st_size, align)
    os.truncate(path, header + data_bytes)
    return path



def _add_text_metadata(writer: gguf.GGUFWriter, s: DemoShape) -> None:
    writer.add_name(f"vlmserve demo Qwen3-VL ({s.name}, random weights)")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_block_count(s.n_layer)
    writer.add_context_length(s.context_length)
    writer.add_embedding_length(s.n_embd)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_key_length(s.head_dim)
    writer.add_value_length(s.head_dim)
    writer.add_rope_freq_base(5_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_array(f"{ARCH}.rope.dimension_sections", list(s.rope_sections))
    writer.add_uint32(f"{ARCH}.n_deepstack_layers", len(s.v_deepstack))


def _add_tokenizer(writer: gguf.GGUFWriter, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.token_types))
    writer.add_token_merges(list(vocab.merges))
    writer.add_eos_token_id(vocab.token_id("<|im_end|>"))
    writer.add_bos_token_id(vocab.token_id("<|endoftext|>"))
    writer.add_pad_token_id(vocab.token_id("<|endoftext|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(QWEN3VL_CHAT_TEMPLATE)


def _text_tensor_shapes(s: DemoShape, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """The text model's tensors in file order: (rows, cols) for F16 matrices, (n,) for F32 norms.

    The order is also the order random weights are drawn in (determinism per seed).
    """
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_vocab, s.n_embd)),
        ("output.weight", (n_vocab, s.n_embd)),
        ("output_norm.weight", (s.n_embd,)),
    ]
    for i in range(s.n_layer):
        p = f"blk.{i}"
        out += [
            (f"{p}.attn_norm.weight", (s.n_embd,)),
            (f"{p}.attn_q.weight", (q_dim, s.n_embd)),
            (f"{p}.attn_k.weight", (kv_dim, s.n_embd)),
            (f"{p}.attn_v.weight", (kv_dim, s.n_embd)),
            (f"{p}.attn_output.weight", (s.n_embd, q_dim)),
            (f"{p}.attn_q_norm.weight", (s.head_dim,)),
            (f"{p}.attn_k_norm.weight", (s.head_dim,)),
            (f"{p}.ffn_norm.weight", (s.n_embd,)),
            (f"{p}.ffn_gate.weight", (s.n_ff, s.n_embd)),
            (f"{p}.ffn_up.weight", (s.n_ff, s.n_embd)),
            (f"{p}.ffn_down.weight", (s.n_embd, s.n_ff)),
        ]
    return out


def write_demo_mmproj(path: str | Path, s: DemoShape, seed: int = 1) -> Path:
    """Write only the vision projector of ``s`` (random weights) to ``path``."""
    path = Path(path)
    _write_mmproj(path, s, seed)
    return path


def _write_mmproj(path: Path, s: DemoShape, seed: int) -> None:
    w = _Weights(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name(f"vlmserve demo Qwen3-VL mmproj ({s.name}, random weights)")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_string("clip.projector_type", "qwen3vl_merger")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", s.v_embd)
    writer.add_uint32("clip.vision.feed_forward_length", s.v_ff)
    writer.add_uint32("clip.vision.block_count", s.v_layer)
    writer.add_uint32("clip.vision.attention.head_count", s.v_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projection_dim", s.n_embd)
    writer.add_uint32("clip.vision.spatial_merge_size", SPATIAL_MERGE)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.is_deepstack_layers",
                     [i in s.v_deepstack for i in range(s.v_layer)])

    d, merged = s.v_embd, s.v_embd * SPATIAL_MERGE * SPATIAL_MERGE
    conv = lambda: (w.matrix(d, 3 * PATCH_SIZE * PATCH_SIZE)  # noqa: E731
                    .reshape(d, 3, PATCH_SIZE, PATCH_SIZE))
    # Qwen's Conv3d patch embedding is stored as two temporal halves.
    writer.add_tensor("v.patch_embd.weight", conv())
    writer.add_tensor("v.patch_embd.weight.1", conv())
    writer.add_tensor("v.patch_embd.bias", w.vector(d))
    n_pos = (IMAGE_SIZE // PATCH_SIZE) ** 2
    writer.add_tensor("v.position_embd.weight", w.vector(n_pos * d).reshape(n_pos, d))
    for i in range(s.v_layer):
        p = f"v.blk.{i}"
        writer.add_tensor(f"{p}.ln1.weight", w.ones(d))
        writer.add_tensor(f"{p}.ln1.bias", w.vector(d))
        writer.add_tensor(f"{p}.attn_qkv.weight", w.matrix(3 * d, d))
        writer.add_tensor(f"{p}.attn_qkv.bias", w.vector(3 * d))
        writer.add_tensor(f"{p}.attn_out.weight", w.matrix(d, d))
        writer.add_tensor(f"{p}.attn_out.bias", w.vector(d))
        writer.add_tensor(f"{p}.ln2.weight", w.ones(d))
        writer.add_tensor(f"{p}.ln2.bias", w.vector(d))
        writer.add_tensor(f"{p}.ffn_up.weight", w.matrix(s.v_ff, d))
        writer.add_tensor(f"{p}.ffn_up.bias", w.vector(s.v_ff))
        writer.add_tensor(f"{p}.ffn_down.weight", w.matrix(d, s.v_ff))
        writer.add_tensor(f"{p}.ffn_down.bias", w.vector(d))
    writer.add_tensor("v.post_ln.weight", w.ones(d))
    writer.add_tensor("v.post_ln.bias", w.vector(d))
    writer.add_tensor("mm.0.weight", w.matrix(merged, merged))
    writer.add_tensor("mm.0.bias", w.vector(merged))
    writer.add_tensor("mm.2.weight", w.matrix(s.n_embd, merged))
    writer.add_tensor("mm.2.bias", w.vector(s.n_embd))
    for layer in s.v_deepstack:
        p = f"v.deepstack.{layer}"
        writer.add_tensor(f"{p}.norm.weight", w.ones(merged))
        writer.add_tensor(f"{p}.norm.bias", w.vector(merged))
        writer.add_tensor(f"{p}.fc1.weight", w.matrix(merged, merged))
        writer.add_tensor(f"{p}.fc1.bias", w.vector(merged))
        writer.add_tensor(f"{p}.fc2.weight", w.matrix(s.n_embd, merged))
        writer.add_tensor(f"{p}.fc2.bias", w.vector(s.n_embd))
    _finish(writer)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

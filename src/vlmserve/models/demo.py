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
from vlmserve.models.qwen3vl_gguf import (
    ARCH,
    add_text_metadata,
    add_tokenizer,
    add_vision_metadata,
    text_tensors,
    vision_tensors,
)

TEXT_FILE = "model.gguf"
VOCABS = ("demo", "qwen")  # the trained few-hundred-token BPE, or Qwen's real 151,936
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

    def fill(self, shape: tuple[int, ...], init: str) -> np.ndarray:
        """A tensor of ``shape`` as ``qwen3vl_gguf``'s ``init`` names it (one draw per tensor)."""
        n = int(np.prod(shape))
        if init == "ones":
            return self.ones(n).reshape(shape)
        if init == "vector":
            return self.vector(n).reshape(shape)
        return self.matrix(shape[0], n // shape[0]).reshape(shape)


def write_demo_model(out_dir: str | Path, size: str | DemoShape = "tiny", seed: int = 0,
                     vocab: str = "demo") -> DemoModelFiles:
    """Write ``model.gguf`` and ``mmproj.gguf`` into ``out_dir``; return their paths.

    ``size`` names one of :data:`SHAPES` or is a :class:`DemoShape` itself
    (e.g. ``dataclasses.replace(SHAPES["8b-layers"], n_layer=2)``).
    The text model is F16; quantizing it is llama.cpp's job, so it happens a layer up
    (``vlmserve demo-model --quant``), never here: models/ does not import the engine.
    ``vocab``: "demo" (a small BPE trained here) or "qwen" (the real 151,936-entry
    Qwen vocabulary, see ``models/qwen_vocab.py``; it is found before anything is
    written, so a missing file fails fast).
    """
    if isinstance(size, DemoShape):
        shape = size
    elif size in SHAPES:
        shape = SHAPES[size]
    else:
        raise VlmserveError(f"unknown demo model size {size!r}; choose one of {', '.join(SHAPES)}")
    if vocab not in VOCABS:
        raise VlmserveError(f"unknown demo vocabulary {vocab!r}; choose one of {', '.join(VOCABS)}")
    if vocab == "qwen":
        from vlmserve.models.qwen_vocab import load_qwen_vocabulary

        tokens = load_qwen_vocabulary()
    else:
        tokens = build_vocabulary(shape.n_merges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = DemoModelFiles(out / TEXT_FILE, out / MMPROJ_FILE)
    _write_text_model(files.model, shape, seed, tokens)
    _write_mmproj(files.mmproj, shape, seed + 1)
    return files


def _write_text_model(path: Path, s: DemoShape, seed: int, vocab: Vocabulary) -> None:
    n_vocab = len(vocab.tokens)
    w = _Weights(seed)
    writer = gguf.GGUFWriter(str(path), ARCH)
    add_text_metadata(writer, **_text_keys(s, vocab))
    _add_tokenizer(writer, vocab)
    special = np.array([t != TOKEN_NORMAL for t in vocab.token_types])
    for name, shape, init in text_tensors(n_vocab=n_vocab, **_dims(s)):
        tensor = w.fill(shape, init)
        if name == "output.weight":
            tensor[special] = 0  # see module docstring: control tokens never win greedily
        writer.add_tensor(name, tensor)
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
    vocab = build_vocabulary(s.n_merges) if n_vocab is None else None
    add_text_metadata(writer, **_text_keys(s, vocab))
    if vocab is not None:
        _add_tokenizer(writer, vocab)
        n_vocab = len(vocab.tokens)
    align = writer.data_alignment
    data_bytes = 0
    for name, shape, _ in text_tensors(n_vocab=n_vocab, **_dims(s)):
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


def _text_keys(s: DemoShape, vocab: Vocabulary | None) -> dict:
    label = "" if vocab is None or len(vocab.tokens) < 100_000 else ", Qwen vocabulary"
    return dict(name=f"vlmserve demo Qwen3-VL ({s.name}{label}, random weights)",
                n_embd=s.n_embd, n_layer=s.n_layer, n_head=s.n_head, n_head_kv=s.n_head_kv,
                head_dim=s.head_dim, n_ff=s.n_ff, context_length=s.context_length,
                rope_sections=s.rope_sections, n_deepstack=len(s.v_deepstack))


def _dims(s: DemoShape) -> dict:
    return dict(n_embd=s.n_embd, n_layer=s.n_layer, n_head=s.n_head, n_head_kv=s.n_head_kv,
                head_dim=s.head_dim, n_ff=s.n_ff)


def _add_tokenizer(writer: gguf.GGUFWriter, vocab: Vocabulary) -> None:
    add_tokenizer(writer, vocab.tokens, vocab.merges, token_types=vocab.token_types,
                  eos_id=vocab.token_id("<|im_end|>"), bos_id=vocab.token_id("<|endoftext|>"),
                  chat_template=QWEN3VL_CHAT_TEMPLATE)


def write_demo_mmproj(path: str | Path, s: DemoShape, seed: int = 1,
                      omit_tensors: tuple[str, ...] = ()) -> Path:
    """Write only the vision projector of ``s`` (random weights) to ``path``.

    ``omit_tensors`` leaves tensors out, for tests of files that would crash llama.cpp.
    """
    path = Path(path)
    _write_mmproj(path, s, seed, omit_tensors)
    return path


def _write_mmproj(path: Path, s: DemoShape, seed: int, omit_tensors: tuple[str, ...] = ()
                  ) -> None:
    w = _Weights(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    dims = dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, v_embd=s.v_embd, v_ff=s.v_ff,
                v_layer=s.v_layer, deepstack=s.v_deepstack, spatial_merge=SPATIAL_MERGE)
    add_vision_metadata(writer, name=f"vlmserve demo Qwen3-VL mmproj ({s.name}, random weights)",
                        v_head=s.v_head, projection_dim=s.n_embd, **dims)
    for name, shape, init in vision_tensors(n_embd=s.n_embd, **dims):
        tensor = w.fill(shape, init)  # drawn even when omitted: the rest stay the same
        if name not in omit_tensors:
            writer.add_tensor(name, tensor)
    _finish(writer)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

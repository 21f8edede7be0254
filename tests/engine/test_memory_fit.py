"""The memory-fit estimate against what llama.cpp reports, for the real Qwen3-VL-8B shape.

What is measured. Text models with the real Qwen3-VL-8B dimensions (n_embd
4096, n_ff 12288, 32 heads, 8 KV heads, head dim 128, rope sections
[24, 20, 20, 0], 3 deepstack layers) but 4 or 5 layers instead of 36, and a
projector with the real vision dimensions (1152 wide, FF 4304, 16 heads) but
3 layers instead of 27, are loaded through ``LlamaBackend``.
``estimate_memory`` (the preflight's estimate, from the GGUF headers alone)
must be within 15 % of llama.cpp's own figures: ``llama_model_size`` for the
text weights, clip's "model size" for the projector, and the "KV buffer size"
llama.cpp allocated, in two context configurations.

The text models are ``write_text_header`` files: real headers over a sparse
body, so their weights are zeros. llama.cpp's memory accounting never looks at
values, and 2 GB of random weights would take most of a minute to write on two
cores. (Fewer than 4 layers is not possible: llama.cpp aborts on a Qwen3-VL
model with no more layers than deepstack layers.) The projector has random
weights.

Why it carries over to the 36-layer model. Both sides are sums over layers of
identical parts:

* KV: llama.cpp allocates one K and one V tensor per layer, each
  ``cells x n_head_kv x head_dim`` elements, and the estimate is
  ``n_layer x cells x (K + V row bytes)``; both are exactly linear in layers.
* weights: ``llama_model_size`` and the estimate both add up the bytes of every
  tensor; all blocks have identical tensors, so both are
  ``non-block tensors + n_layer x one block``.

So the test measures llama.cpp's per-layer figures as the difference between
the 5- and the 4-layer model and checks the estimate's per-layer figures
against them; it then checks that the estimate for the full shape (a header
with the full 36-layer metadata and the real 151,936-token vocabulary, never
loaded: 16 GB) is exactly the non-block part plus 36 times those per-layer
figures, and within 15 % of llama.cpp's figures extrapolated the same way.
Numbers are printed (``pytest -s``).

Compute buffers are reported, not asserted: the heuristic is documented as
+-50 %, and the real 8B's compute buffer is dominated by the logits of its
151,936-token vocabulary, which the demo vocabulary does not have.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from vlmserve.config import EngineConfig
from vlmserve.engine.llamacpp.backend import LlamaBackend, LoadedMemory, _parse_memory_lines
from vlmserve.models.demo import SHAPES, write_demo_mmproj, write_text_header
from vlmserve.models.gguf_info import read_gguf_info
from vlmserve.models.memory import MemoryEstimate, MiB, estimate_for_shape, estimate_memory

TOLERANCE = 0.15
REAL_N_LAYER = 36
REAL_N_VOCAB = 151_936

# Real Qwen3-VL-8B per-layer dimensions, text and vision (3 vision layers, all deepstack).
SHAPE_8B = replace(SHAPES["8b-layers"], name="8b-memfit", n_layer=REAL_N_LAYER,
                   v_layer=3, v_deepstack=(0, 1, 2))
# (n_ctx_per_slot, n_parallel, n_batch): the second pads 1000 tokens per slot to 1024 cells.
CONFIGS = {"4096x2": (4096, 2, 512), "1000x3": (1000, 3, 256)}


class Measured:
    """Written files and (cached) loads: each load of a ~2 GB model costs seconds."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mmproj = write_demo_mmproj(folder / "mmproj.gguf", SHAPE_8B)  # ~400 MiB
        self._loads: dict[tuple[int, str], tuple[LoadedMemory, MemoryEstimate]] = {}

    def model(self, n_layer: int) -> Path:
        path = self.folder / f"model-{n_layer}-layers.gguf"
        if not path.exists():
            write_text_header(path, replace(SHAPE_8B, n_layer=n_layer))
        return path

    def load(self, n_layer: int, config: str) -> tuple[LoadedMemory, MemoryEstimate]:
        """llama.cpp's report and the estimate for the model + projector in ``config``."""
        key = (n_layer, config)
        if key not in self._loads:
            n_ctx, n_parallel, n_batch = CONFIGS[config]
            model = self.model(n_layer)
            backend = LlamaBackend(EngineConfig(
                model_path=model, mmproj_path=self.mmproj, n_ctx_per_slot=n_ctx,
                n_parallel=n_parallel, n_batch=n_batch, n_threads=1))
            try:
                reported = backend.memory_report()
            finally:
                backend.close()
            est = estimate_memory(read_gguf_info(model), read_gguf_info(self.mmproj),
                                  n_ctx=n_ctx, n_parallel=n_parallel, n_ubatch=n_batch)
            self._loads[key] = reported, est
        return self._loads[key]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measured]:
    folder = tmp_path_factory.mktemp("memfit-8b")
    yield Measured(folder)
    shutil.rmtree(folder)  # ~400 MiB of projector (pytest keeps the last runs' tmp folders)


def off(estimated: int, reported: int | None) -> float:
    assert reported, "llama.cpp did not report this figure (has its log format changed?)"
    return abs(estimated - reported) / reported


def show(label: str, estimated: int, reported: int | None) -> str:
    reported = reported or 0
    return (f"{label}: estimate {estimated / MiB:.2f} MiB, llama.cpp {reported / MiB:.2f} MiB "
            f"({(estimated - reported) / max(reported, 1):+.2%})")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_estimate_matches_llama_cpp_for_8b_layers(measured: Measured, config: str) -> None:
    reported, est = measured.load(4, config)
    print(f"\n[4 layers, {config}] " + "; ".join([
        show("weights", est.weights_bytes, reported.weights_bytes),
        show("mmproj", est.mmproj_bytes, reported.mmproj_bytes),
        show("KV", est.kv_bytes, reported.kv_bytes),
    ]))
    assert off(est.weights_bytes, reported.weights_bytes) <= TOLERANCE
    assert off(est.mmproj_bytes, reported.mmproj_bytes) <= TOLERANCE
    assert off(est.kv_bytes, reported.kv_bytes) <= TOLERANCE
    # On CPU the F16 weights stay in the mmap'ed file: the buffers are the weights.
    assert off(est.weights_bytes, reported.model_buffer_bytes) <= TOLERANCE

    # Reported only: the text part of the compute heuristic (mtmd reserves the vision
    # compute buffer at the first image: vlmserve loads the projector without warm-up).
    text = estimate_for_shape(replace(est.shape, v_embd=0), n_ctx=est.n_ctx,
                              n_parallel=est.n_parallel, image_cache_bytes=0,
                              n_ubatch=est.n_ubatch)
    compute = (reported.compute_bytes or 0) + (reported.output_bytes or 0)
    print(f"[4 layers, {config}] "
          + show("text compute + output buffers (not asserted)", text.compute_bytes, compute))


def test_per_layer_agreement_carries_over_to_36_layers(measured: Measured, tmp_path) -> None:
    config = "4096x2"
    (r4, e4), (r5, e5) = measured.load(4, config), measured.load(5, config)
    assert r4.kv_bytes and r5.kv_bytes

    # Bytes per layer, llama.cpp's and the estimate's: one transformer block, one layer of KV.
    block_llama, block_est = r5.weights_bytes - r4.weights_bytes, e5.weights_bytes - e4.weights_bytes
    kv_layer_llama, kv_layer_est = r5.kv_bytes - r4.kv_bytes, e5.kv_bytes - e4.kv_bytes
    print("\n[per layer] " + show("block weights", block_est, block_llama) + "; "
          + show("KV", kv_layer_est, kv_layer_llama))
    assert off(block_est, block_llama) <= TOLERANCE
    assert off(kv_layer_est, kv_layer_llama) <= TOLERANCE
    assert 4 * r5.kv_bytes == 5 * r4.kv_bytes  # llama.cpp's KV is linear in layers

    # The full shape from its header alone, at 36 layers and at 4 (real vocabulary).
    n_ctx, n_parallel, n_batch = CONFIGS[config]

    def header_estimate(n_layer: int) -> MemoryEstimate:
        path = write_text_header(tmp_path / f"8b-{n_layer}.gguf",
                                 replace(SHAPE_8B, n_layer=n_layer), n_vocab=REAL_N_VOCAB)
        return estimate_memory(read_gguf_info(path), n_ctx=n_ctx, n_parallel=n_parallel,
                               n_ubatch=n_batch)

    full, four = header_estimate(REAL_N_LAYER), header_estimate(4)
    assert (full.shape.n_layer, full.shape.n_vocab) == (REAL_N_LAYER, REAL_N_VOCAB)
    # The estimate is exactly linear in layers, with the per-layer figures checked above.
    assert full.kv_bytes == REAL_N_LAYER * kv_layer_est
    assert full.weights_bytes == four.weights_bytes + (REAL_N_LAYER - 4) * block_est
    # 144 KiB of KV per cell for the real 8B (docs/models.md); 2 x 4096 cells here.
    assert full.kv_bytes == 8192 * 144 * 1024 == 1152 * MiB

    # llama.cpp's figures extrapolated the same way: the 4-layer model plus 32 blocks,
    # plus the vocabulary rows the demo lacks (token_embd and output, F16 rows of n_embd:
    # counted like the F16 matrix rows of the blocks above).
    vocab_rows_bytes = 2 * (REAL_N_VOCAB - e4.shape.n_vocab) * SHAPE_8B.n_embd * 2
    weights_llama = r4.weights_bytes + (REAL_N_LAYER - 4) * block_llama + vocab_rows_bytes
    kv_llama = REAL_N_LAYER * kv_layer_llama
    print(f"[36 layers, {config}] " + show("weights", full.weights_bytes, weights_llama) + "; "
          + show("KV", full.kv_bytes, kv_llama))
    assert off(full.weights_bytes, weights_llama) <= TOLERANCE
    assert off(full.kv_bytes, kv_llama) <= TOLERANCE


def test_parse_memory_lines_sums_devices_and_ignores_the_rest() -> None:
    lines = [
        "load_tensors:   CPU_Mapped model buffer size =   749.86 MiB",
        "load_tensors:        CUDA0 model buffer size =  1024.00 MiB",
        "llama_context:  CUDA_Host  output buffer size =     0.58 MiB",
        "llama_kv_cache:      CUDA0 KV buffer size =    64.00 MiB",
        "llama_kv_cache: size =   64.00 MiB (  4096 cells,   2 layers,  2/2 seqs), K (f16): ...",
        "sched_reserve:      CUDA0 compute buffer size =   300.00 MiB",
        "sched_reserve:  CUDA_Host compute buffer size =    16.00 MiB",
        "load_hparams: model size:         436.13 MiB",
        "reserve_compute_meta:        CPU compute buffer size =   200.50 MiB",
        "~llama_context:        CPU compute buffer size is 164.0195 MiB, matches expectation",
        "llama_adapter:        CPU LoRA buffer size =     8.00 MiB",
    ]
    assert _parse_memory_lines(lines) == {
        "model": round(749.86 * MiB) + 1024 * MiB,
        "output": round(0.58 * MiB),
        "kv": 64 * MiB,
        "compute": 316 * MiB,
        "mmproj": round(436.13 * MiB),
        "vision_compute": round(200.5 * MiB),
    }

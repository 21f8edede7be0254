"""Will it fit? Memory estimate for a model + mmproj + KV cache, and the memory available.

The KV cache follows llama.cpp exactly (``llama-context.cpp`` / ``llama-kv-cache.cpp``):

* the context is padded: ``n_ctx = pad(n_ctx, 256)``; without a unified KV cache
  every sequence gets its own stream of ``n_ctx_seq = pad(n_ctx / n_seq_max, 256)``
  cells and ``n_ctx = n_ctx_seq * n_seq_max``. Total cells are the same either way.
* every layer stores K and V rows of ``n_head_kv * key_length`` and
  ``n_head_kv * value_length`` elements per cell, in ``type_k`` / ``type_v``
  (f16 by default: 2 bytes per element).

So ``kv_bytes = n_layer * cells * n_head_kv * (key_length + value_length) * 2``:
for the real Qwen3-VL-8B (36 layers, 8 KV heads, head dim 128) and 4096 cells,
576 MiB.

Weights are the tensor-data bytes of the GGUF files (what mmap or the GPU
holds). The compute buffers are a *heuristic* (see :func:`_compute_bytes`):
llama.cpp sizes them by reserving a worst-case graph, which this module does
not replicate op by op; expect it within about +-50 %, and it is a few hundred
MiB next to gigabytes of weights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmserve.errors import InsufficientMemoryError, ModelLoadError

if TYPE_CHECKING:  # only annotations: keeps numpy/gguf out of `import memory` (CLI startup)
    from vlmserve.models.gguf_info import GGUFInfo

MiB = 1024**2
GiB = 1024**3

# Bytes per block and elements per block of the KV cache types llama.cpp accepts
# (ggml_row_size: f16 = 2n, q8_0 = 34n/32, q4_0 = 18n/32 ...).
KV_TYPE_SIZES: dict[str, tuple[int, int]] = {
    "f32": (4, 1),
    "f16": (2, 1),
    "bf16": (2, 1),
    "q8_0": (34, 32),
    "q5_1": (24, 32),
    "q5_0": (22, 32),
    "q4_1": (20, 32),
    "q4_0": (18, 32),
    "iq4_nl": (18, 32),
}

# llama.cpp pads the context (and each sequence's share of it) to this many cells.
KV_PAD = 256

# Memory left free for the OS, the Python process, Gradio and friends when checking a fit.
DEFAULT_MARGIN_BYTES = 512 * MiB

# Quantizations from which Q4_K_M is a meaningful step down.
_LARGER_THAN_Q4 = {"F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1"}


def _pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


def kv_cells(n_ctx_total: int, n_parallel: int = 1, kv_unified: bool = False) -> int:
    """KV cells llama.cpp allocates for ``n_ctx=n_ctx_total`` and ``n_seq_max=n_parallel``."""
    if n_ctx_total < 1 or n_parallel < 1:
        raise ValueError("context and parallel sequences must be >= 1")
    n_ctx = _pad(n_ctx_total, KV_PAD)
    if kv_unified:
        return n_ctx
    return _pad(n_ctx // n_parallel, KV_PAD) * n_parallel


def kv_row_bytes(n_elements: int, kv_type: str = "f16") -> int:
    """Bytes of one K (or V) row of ``n_elements`` in ``kv_type`` (ggml_row_size)."""
    try:
        type_size, block = KV_TYPE_SIZES[kv_type]
    except KeyError:
        raise ValueError(
            f"unknown KV cache type {kv_type!r}; known: {', '.join(KV_TYPE_SIZES)}"
        ) from None
    return n_elements * type_size // block


@dataclass(frozen=True)
class ModelShape:
    """The numbers an estimate needs, taken from the text model's and the mmproj's headers."""

    name: str  # text model file name, for messages
    file_type: str | None
    weights_bytes: int
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    n_vocab: int
    n_deepstack: int
    mmproj_bytes: int = 0
    v_embd: int = 0  # 0: no vision encoder
    v_ff: int = 0
    v_heads: int = 0
    v_merge: int = 2

    @classmethod
    def from_infos(cls, model: GGUFInfo, mmproj: GGUFInfo | None = None) -> ModelShape:
        needed = {
            "block_count": model.n_layer,
            "embedding_length": model.n_embd,
            "attention.head_count": model.n_head,
        }
        missing = [k for k, v in needed.items() if not v]
        if model.is_clip or missing:
            what = "is a vision projector" if model.is_clip else f"lacks {', '.join(missing)}"
            raise ModelLoadError(f"cannot estimate memory for {model.path.name}: it {what}")
        head = model.n_embd // model.n_head  # type: ignore[operator]
        v = mmproj.vision if mmproj is not None else None
        return cls(
            name=model.path.name,
            file_type=model.file_type,
            weights_bytes=model.tensor_data_bytes,
            n_layer=model.n_layer or 0,
            n_embd=model.n_embd or 0,
            n_ff=model.n_ff or 4 * (model.n_embd or 0),
            n_head=model.n_head or 0,
            n_head_kv=model.n_head_kv or model.n_head or 0,
            key_length=model.key_length or head,
            value_length=model.value_length or head,
            n_vocab=model.vocab_size or 0,
            n_deepstack=model.n_deepstack_layers,
            mmproj_bytes=mmproj.tensor_data_bytes if mmproj is not None else 0,
            v_embd=(v.embedding_length or 0) if v else 0,
            v_ff=(v.feed_forward_length or 0) if v else 0,
            v_heads=(v.head_count or 0) if v else 0,
            v_merge=(v.spatial_merge_size or 2) if v else 2,
        )

    def kv_bytes_per_cell(self, kv_type: str = "f16") -> int:
        """K and V bytes of one cell over all layers."""
        k = kv_row_bytes(self.n_head_kv * self.key_length, kv_type)
        v = kv_row_bytes(self.n_head_kv * self.value_length, kv_type)
        return self.n_layer * (k + v)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a served model needs; ``total`` is what has to fit."""

    weights_bytes: int  # text model tensor data
    mmproj_bytes: int  # vision projector tensor data
    kv_bytes: int  # KV cache, exactly as llama.cpp allocates it
    compute_bytes: int  # text + vision compute buffers and the logits buffer (heuristic)
    image_cache_bytes: int  # vlmserve's image-embedding cache budget (host memory)
    n_ctx: int  # context per slot, as asked
    n_parallel: int  # slots (llama.cpp n_seq_max)
    kv_cells: int  # cells llama.cpp allocates for n_ctx * n_parallel (padded)
    kv_type: str
    flash_attn: bool
    n_ubatch: int
    image_max_tokens: int
    shape: ModelShape

    @property
    def total(self) -> int:
        return (
            self.weights_bytes
            + self.mmproj_bytes
            + self.kv_bytes
            + self.compute_bytes
            + self.image_cache_bytes
        )

    @property
    def device_bytes(self) -> int:
        """What sits in GPU memory when every layer and the mmproj are offloaded."""
        return self.weights_bytes + self.mmproj_bytes + self.kv_bytes + self.compute_bytes

    def breakdown(self) -> str:
        """``weights 4.7 GiB, KV cache 576 MiB for 1 slot x 4096 tokens, ...``"""
        slots = "slot" if self.n_parallel == 1 else "slots"
        parts = [f"weights {fmt_bytes(self.weights_bytes)}"]
        if self.mmproj_bytes:
            parts.append(f"vision projector {fmt_bytes(self.mmproj_bytes)}")
        parts.append(
            f"KV cache {fmt_bytes(self.kv_bytes)} "
            f"for {self.n_parallel} {slots} x {self.n_ctx} tokens"
        )
        parts.append(f"compute buffers ~{fmt_bytes(self.compute_bytes)}")
        if self.image_cache_bytes:
            parts.append(f"image cache {fmt_bytes(self.image_cache_bytes)}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total
        d["device_bytes"] = self.device_bytes
        return d


def estimate_memory(
    model_info: GGUFInfo,
    mmproj_info: GGUFInfo | None = None,
    *,
    n_ctx: int = 4096,
    n_parallel: int = 1,
    image_cache_mb: int = 0,
    n_ubatch: int = 512,
    kv_type: str = "f16",
    flash_attn: bool = True,
    kv_unified: bool = False,
    image_max_tokens: int = 1024,
) -> MemoryEstimate:
    """Estimate the memory to serve ``model_info`` (+ ``mmproj_info``).

    ``n_ctx`` is the context *per slot* (``EngineConfig.n_ctx_per_slot``);
    llama.cpp gets ``n_ctx * n_parallel`` and ``n_seq_max = n_parallel``.
    ``flash_attn`` defaults to on because llama.cpp's "auto" enables it on CPU
    and CUDA; without it the attention scores add ``n_ctx_seq * n_ubatch *
    n_head * 4`` bytes. ``image_max_tokens`` is the largest image, in merged
    tokens, the vision graph is sized for (1024 = a 1024x1024 image).
    """
    shape = ModelShape.from_infos(model_info, mmproj_info)
    return estimate_for_shape(
        shape,
        n_ctx=n_ctx,
        n_parallel=n_parallel,
        image_cache_bytes=image_cache_mb * MiB,
        n_ubatch=n_ubatch,
        kv_type=kv_type,
        flash_attn=flash_attn,
        kv_unified=kv_unified,
        image_max_tokens=image_max_tokens,
    )


def estimate_for_shape(
    shape: ModelShape,
    *,
    n_ctx: int,
    n_parallel: int,
    image_cache_bytes: int,
    n_ubatch: int = 512,
    kv_type: str = "f16",
    flash_attn: bool = True,
    kv_unified: bool = False,
    image_max_tokens: int = 1024,
) -> MemoryEstimate:
    """:func:`estimate_memory` on an already extracted :class:`ModelShape`."""
    if n_ctx < 1 or n_parallel < 1 or n_ubatch < 1:
        raise ValueError("n_ctx, n_parallel and n_ubatch must be >= 1")
    cells = kv_cells(n_ctx * n_parallel, n_parallel, kv_unified)
    cells_per_stream = cells if kv_unified else cells // n_parallel
    return MemoryEstimate(
        weights_bytes=shape.weights_bytes,
        mmproj_bytes=shape.mmproj_bytes,
        kv_bytes=cells * shape.kv_bytes_per_cell(kv_type),
        compute_bytes=_compute_bytes(
            shape, cells_per_stream, n_parallel, n_ubatch, flash_attn, image_max_tokens
        ),
        image_cache_bytes=image_cache_bytes,
        n_ctx=n_ctx,
        n_parallel=n_parallel,
        kv_cells=cells,
        kv_type=kv_type,
        flash_attn=flash_attn,
        n_ubatch=n_ubatch,
        image_max_tokens=image_max_tokens,
        shape=shape,
    )


def _compute_bytes(
    s: ModelShape,
    n_kv: int,
    n_parallel: int,
    n_ubatch: int,
    flash_attn: bool,
    image_max_tokens: int,
) -> int:
    """Heuristic size of llama.cpp's compute buffers (f32 activations, 4 bytes each).

    Text graph, reserved for a worst-case ubatch of ``n_ubatch`` tokens that all
    produce logits: the logits (``n_vocab * n_ubatch``) at the end of the graph,
    or, earlier, the attention scores (``n_kv * n_ubatch * n_head``, only without
    flash attention) plus the FFN/attention activations, whichever is larger
    (ggml's allocator reuses memory between the two), plus the input embeddings
    that Qwen3-VL widens by the deepstack layers. The logits output buffer keeps
    one row per sequence.

    Vision graph (mtmd sizes it for its largest image): per patch the
    activations of one encoder layer, plus the patch-by-patch attention scores
    without flash attention.
    """
    f32 = 4
    logits = s.n_vocab * n_ubatch * f32
    scores = 0 if flash_attn else n_kv * n_ubatch * s.n_head * f32
    acts = n_ubatch * f32 * (3 * s.n_embd + 2 * s.n_ff)
    inputs = n_ubatch * f32 * s.n_embd * (1 + s.n_deepstack)
    output_buffer = s.n_vocab * f32 * n_parallel
    text = max(logits, scores + acts) + inputs + output_buffer
    vision = 0
    if s.v_embd:
        patches = image_max_tokens * s.v_merge * s.v_merge
        v_scores = 0 if flash_attn else patches * patches * s.v_heads * f32
        vision = v_scores + patches * f32 * (4 * s.v_embd + 2 * s.v_ff)
    return text + vision


# --------------------------------------------------------------------------- what is available


@dataclass(frozen=True)
class AvailableMemory:
    """Free memory now: RAM (MemAvailable, capped by a cgroup limit) and GPU memory."""

    ram_bytes: int | None  # None: could not be determined
    vram_bytes: int | None  # None: no NVIDIA GPU visible (or nvidia-smi missing)
    gpus_free_bytes: tuple[int, ...] = ()  # per GPU
    ram_source: str = ""  # where ram_bytes came from, for messages and `info`


def available_memory(
    *,
    meminfo: str | Path = "/proc/meminfo",
    cgroup_root: str | Path = "/sys/fs/cgroup",
    nvidia_smi: str = "nvidia-smi",
) -> AvailableMemory:
    """RAM and VRAM free now. The paths are parameters so tests can point them at fixtures."""
    ram, source = _ram_available(Path(meminfo))
    limit = _cgroup_headroom(Path(cgroup_root))
    if limit is not None and (ram is None or limit < ram):
        ram, source = limit, "cgroup memory limit"
    gpus = _gpu_free(nvidia_smi)
    return AvailableMemory(
        ram_bytes=ram,
        vram_bytes=sum(gpus) if gpus else None,
        gpus_free_bytes=gpus,
        ram_source=source,
    )


def _ram_available(meminfo: Path) -> tuple[int | None, str]:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable"
    except (OSError, ValueError, IndexError):
        pass
    # Without /proc (macOS, BSD): free pages only, an underestimate (ignores reclaimable cache).
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages"
    except (ValueError, OSError, AttributeError):
        return None, ""


def _cgroup_headroom(root: Path) -> int | None:
    """Limit minus usage of this process's memory cgroup (containers see host RAM in /proc)."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),  # cgroup v1
    ):
        try:
            raw = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if raw == "max" or not raw.isdigit() or int(raw) >= 1 << 60:  # v1 "unlimited" is ~2^63
            return None
        return max(0, int(raw) - usage)
    return None


def _gpu_free(nvidia_smi: str) -> tuple[int, ...]:
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return tuple(int(float(x)) * MiB for x in out.split() if x.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return ()


# --------------------------------------------------------------------------- the policy


def check_fit(
    estimate: MemoryEstimate,
    available: AvailableMemory,
    *,
    use_gpu: bool = False,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
) -> None:
    """Raise ``InsufficientMemoryError`` if ``estimate`` does not fit in ``available``.

    CPU (``use_gpu=False``): everything must fit in RAM with ``margin_bytes`` to
    spare. GPU: weights, mmproj, KV and compute must fit in the free GPU memory
    (all GPUs together, as llama.cpp splits layers across them) and the image
    cache in RAM. When the free amount is unknown nothing is refused. The
    message suggests what would fit: a smaller quantization, a shorter
    context, fewer slots, a smaller image cache.
    """
    on_gpu = use_gpu and available.vram_bytes is not None
    have = available.vram_bytes if on_gpu else available.ram_bytes
    if have is None:
        return
    where = "GPU memory" if on_gpu else "RAM"

    def need(e: MemoryEstimate) -> int:
        return e.device_bytes if on_gpu else e.total

    def fits(e: MemoryEstimate) -> bool:
        return need(e) + margin_bytes <= have

    if fits(estimate):
        if use_gpu and available.ram_bytes is not None:
            if estimate.image_cache_bytes + margin_bytes > available.ram_bytes:
                raise InsufficientMemoryError(
                    f"the image cache ({fmt_bytes(estimate.image_cache_bytes)}) does not fit in "
                    f"the {fmt_bytes(available.ram_bytes)} of RAM available: make it smaller"
                )
        return
    raise InsufficientMemoryError(
        f"{estimate.shape.name} needs about {fmt_bytes(need(estimate))} "
        f"({estimate.breakdown()}) but only "
        f"{fmt_bytes(have)} of {where} is available: try {_suggestions(estimate, fits)}"
    )


def _suggestions(est: MemoryEstimate, fits: Callable[[MemoryEstimate], bool]) -> str:
    def again(**kw: Any) -> MemoryEstimate:
        params = dict(
            n_ctx=est.n_ctx,
            n_parallel=est.n_parallel,
            image_cache_bytes=est.image_cache_bytes,
            n_ubatch=est.n_ubatch,
            kv_type=est.kv_type,
            flash_attn=est.flash_attn,
            image_max_tokens=est.image_max_tokens,
        )
        params.update(kw)
        return estimate_for_shape(est.shape, **params)

    out = []
    ft = est.shape.file_type
    if ft is None or ft.upper() in _LARGER_THAN_Q4:
        out.append(f"a smaller quantization (Q4_K_M instead of {ft or 'this file'})")
    else:
        out.append("a smaller quantization or a smaller model")
    # Largest context per slot (a multiple of 256) that fits, all else equal.
    lo, hi, best = 1, est.n_ctx // KV_PAD, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(again(n_ctx=mid * KV_PAD)):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best and best * KV_PAD < est.n_ctx:
        out.append(f"a shorter context ({best * KV_PAD} tokens per slot would fit)")
    else:
        out.append("a shorter context")
    if est.n_parallel > 1:
        slots = next((p for p in range(est.n_parallel - 1, 0, -1) if fits(again(n_parallel=p))), 0)
        out.append(f"fewer slots ({slots} would fit)" if slots else "fewer slots")
    if est.image_cache_bytes:
        out.append("a smaller image cache")
    return ", ".join(out[:-1]) + " or " + out[-1] if len(out) > 1 else out[0]


def fmt_bytes(n: int | float) -> str:
    """``1.5 GiB``, ``576 MiB``, ``12 KiB``: binary units, as llama.cpp prints them."""
    n = float(n)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.1f} {unit}" if v < 100 and unit == "GiB" else f"{v:.0f} {unit}"
    return f"{int(n)} B"


__all__ = [
    "AvailableMemory",
    "MemoryEstimate",
    "ModelShape",
    "available_memory",
    "check_fit",
    "estimate_for_shape",
    "estimate_memory",
    "fmt_bytes",
    "kv_cells",
    "kv_row_bytes",
]

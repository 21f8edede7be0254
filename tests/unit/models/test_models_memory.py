"""Memory estimate arithmetic, the fit policy and the available-memory probes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from ggufgen import write_mmproj_gguf, write_text_gguf

from vlmserve.errors import InsufficientMemoryError, ModelLoadError
from vlmserve.models.gguf_info import read_gguf_info
from vlmserve.models.memory import (
    AvailableMemory,
    GiB,
    MiB,
    ModelShape,
    available_memory,
    check_fit,
    estimate_for_shape,
    estimate_memory,
    fmt_bytes,
    kv_cells,
    kv_row_bytes,
)

# The real Qwen3-VL-8B-Instruct text shape.
REAL_8B = dict(
    n_embd=4096,
    n_layer=36,
    n_head=32,
    n_head_kv=8,
    head_dim=128,
    n_ff=12288,
    context_length=262144,
    rope_sections=[24, 20, 20, 0],
    n_vocab=1000,
)


@pytest.fixture
def real_8b_info(tmp_path: Path):
    return read_gguf_info(write_text_gguf(tmp_path / "q8.gguf", layer_tensors=False, **REAL_8B))


def test_kv_cache_of_the_real_8b_shape(real_8b_info) -> None:
    est = estimate_memory(real_8b_info, n_ctx=4096, n_parallel=1)
    # 36 layers * 4096 cells * (8 heads * 128 K + 8 * 128 V) * 2 bytes (f16)
    assert est.kv_bytes == 36 * 4096 * (8 * 128 * 2) * 2 == 576 * MiB
    assert est.kv_cells == 4096


def test_kv_cache_scales_with_slots_and_type(real_8b_info) -> None:
    four = estimate_memory(real_8b_info, n_ctx=4096, n_parallel=4)
    assert four.kv_cells == 16384 and four.kv_bytes == 4 * 576 * MiB
    q8 = estimate_memory(real_8b_info, n_ctx=4096, kv_type="q8_0")
    assert q8.kv_bytes == 36 * 4096 * 2 * (1024 * 34 // 32)


def test_kv_cells_follow_llama_cpp_padding() -> None:
    assert kv_cells(4096, 1) == 4096
    assert kv_cells(1000, 1) == 1024  # n_ctx padded to 256
    assert kv_cells(3000, 3) == 3 * 1024  # each sequence's 1000 padded to 1024
    assert kv_cells(4096, 32) == 32 * 256  # 128 per sequence padded to 256
    assert kv_cells(4096, 32, kv_unified=True) == 4096
    assert kv_row_bytes(1024, "f16") == 2048 and kv_row_bytes(1024, "q4_0") == 576
    with pytest.raises(ValueError, match="unknown KV cache type"):
        kv_row_bytes(1024, "q3")


def test_estimate_parts_add_up(tmp_path: Path) -> None:
    model = read_gguf_info(write_text_gguf(tmp_path / "m.gguf"))
    mmproj = read_gguf_info(write_mmproj_gguf(tmp_path / "p.gguf"))
    est = estimate_memory(model, mmproj, n_ctx=1024, n_parallel=2, image_cache_mb=64)
    assert est.weights_bytes == model.tensor_data_bytes
    assert est.mmproj_bytes == mmproj.tensor_data_bytes
    assert est.image_cache_bytes == 64 * MiB
    assert est.compute_bytes > 0
    assert est.total == (
        est.weights_bytes
        + est.mmproj_bytes
        + est.kv_bytes
        + est.compute_bytes
        + est.image_cache_bytes
    )
    assert est.device_bytes == est.total - est.image_cache_bytes
    without_fa = estimate_memory(model, mmproj, n_ctx=1024, n_parallel=2, flash_attn=False)
    assert without_fa.compute_bytes > est.compute_bytes  # attention scores are materialized
    d = est.to_dict()
    assert d["total_bytes"] == est.total and d["kv_cells"] == 2048


def test_estimate_refuses_an_mmproj_as_model(tmp_path: Path) -> None:
    mmproj = read_gguf_info(write_mmproj_gguf(tmp_path / "p.gguf"))
    with pytest.raises(ModelLoadError, match="p.gguf: it is a vision projector"):
        estimate_memory(mmproj)


def _shape(**kw) -> ModelShape:
    base = dict(
        name="Qwen3VL-8B-Instruct-Q8_0.gguf",
        file_type="Q8_0",
        weights_bytes=8 * GiB,
        n_layer=36,
        n_embd=4096,
        n_ff=12288,
        n_head=32,
        n_head_kv=8,
        key_length=128,
        value_length=128,
        n_vocab=151936,
        n_deepstack=3,
        mmproj_bytes=GiB,
        v_embd=1152,
        v_ff=4304,
        v_heads=16,
    )
    base.update(kw)
    return ModelShape(**base)


def test_check_fit_accepts_what_fits() -> None:
    est = estimate_for_shape(_shape(), n_ctx=4096, n_parallel=1, image_cache_bytes=0)
    check_fit(est, AvailableMemory(ram_bytes=est.total + GiB, vram_bytes=None))
    check_fit(est, AvailableMemory(ram_bytes=None, vram_bytes=None))  # unknown: no refusal


def test_check_fit_refusal_message() -> None:
    est = estimate_for_shape(_shape(), n_ctx=8192, n_parallel=4, image_cache_bytes=512 * MiB)
    with pytest.raises(InsufficientMemoryError) as ei:
        check_fit(est, AvailableMemory(ram_bytes=14 * GiB, vram_bytes=None))
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("Qwen3VL-8B-Instruct-Q8_0.gguf needs about 14.")
    assert "KV cache 4.5 GiB for 4 slots x 8192 tokens" in msg
    assert "but only 14.0 GiB of RAM is available" in msg
    assert "a smaller quantization (Q4_K_M instead of Q8_0)" in msg
    assert "fewer slots (3 would fit)" in msg
    assert "a smaller image cache" in msg
    # the suggested context really fits, and one step more does not
    ctx = int(msg.split("a shorter context (")[1].split(" tokens")[0])
    ok = AvailableMemory(ram_bytes=14 * GiB, vram_bytes=None)
    check_fit(
        estimate_for_shape(_shape(), n_ctx=ctx, n_parallel=4, image_cache_bytes=512 * MiB), ok
    )
    with pytest.raises(InsufficientMemoryError):
        check_fit(
            estimate_for_shape(
                _shape(), n_ctx=ctx + 256, n_parallel=4, image_cache_bytes=512 * MiB
            ),
            ok,
        )


def test_check_fit_on_gpu_counts_device_memory_only() -> None:
    est = estimate_for_shape(_shape(), n_ctx=4096, n_parallel=1, image_cache_bytes=GiB)
    avail = AvailableMemory(ram_bytes=2 * GiB, vram_bytes=est.device_bytes + GiB)
    check_fit(est, avail, use_gpu=True)
    with pytest.raises(InsufficientMemoryError, match="of GPU memory is available"):
        check_fit(est, AvailableMemory(ram_bytes=64 * GiB, vram_bytes=4 * GiB), use_gpu=True)
    with pytest.raises(InsufficientMemoryError, match="image cache"):
        check_fit(est, AvailableMemory(ram_bytes=GiB, vram_bytes=64 * GiB), use_gpu=True)


def test_available_memory_reads_meminfo_and_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   16000000 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    avail = available_memory(meminfo=meminfo, cgroup_root=cg, nvidia_smi="no-such-nvidia-smi")
    assert avail.ram_bytes == 16_000_000 * 1024 and avail.ram_source == "MemAvailable"
    assert avail.vram_bytes is None
    # A container limit below MemAvailable wins.
    (cg / "memory.max").write_text(f"{8 * GiB}\n")
    (cg / "memory.current").write_text(f"{GiB}\n")
    avail = available_memory(meminfo=meminfo, cgroup_root=cg, nvidia_smi="no-such-nvidia-smi")
    assert avail.ram_bytes == 7 * GiB and avail.ram_source == "cgroup memory limit"
    (cg / "memory.max").write_text("max\n")
    avail = available_memory(meminfo=meminfo, cgroup_root=cg, nvidia_smi="no-such-nvidia-smi")
    assert avail.ram_bytes == 16_000_000 * 1024


def test_available_memory_asks_nvidia_smi(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '1024\\n2048\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    avail = available_memory(nvidia_smi=str(fake))
    assert avail.gpus_free_bytes == (1024 * MiB, 2048 * MiB)
    assert avail.vram_bytes == 3072 * MiB


def test_fmt_bytes() -> None:
    assert fmt_bytes(576 * MiB) == "576 MiB"
    assert fmt_bytes(1.5 * GiB) == "1.5 GiB"
    assert fmt_bytes(12 * 1024) == "12 KiB"
    assert fmt_bytes(10) == "10 B"

"""read_gguf_info and the pre-load validation, on GGUF files written by GGUFWriter."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf.constants import GGMLQuantizationType, LlamaFileType
from ggufgen import write_mmproj_gguf, write_text_gguf

from vlmserve.errors import ModelLoadError
from vlmserve.models.gguf_info import (
    read_gguf_info,
    validate_mmproj,
    validate_model_pair,
    validate_text_model,
)


def test_text_fields(tmp_path: Path) -> None:
    p = write_text_gguf(
        tmp_path / "m.gguf",
        n_embd=256,
        n_layer=3,
        n_head=4,
        n_head_kv=2,
        head_dim=64,
        n_ff=512,
        n_vocab=100,
        context_length=8192,
        rope_sections=[8, 12, 12, 0],
    )
    info = read_gguf_info(p)
    assert info.architecture == "qwen3vl"
    assert info.name == "Fake Qwen3-VL"
    assert info.file_type == "F16" and not info.file_type_from_tensors
    assert (info.n_layer, info.n_embd, info.n_ff) == (3, 256, 512)
    assert (info.n_head, info.n_head_kv, info.key_length, info.value_length) == (4, 2, 64, 64)
    assert info.context_length == 8192
    assert info.rope_sections == (8, 12, 12, 0)
    assert info.n_deepstack_layers == 3
    assert info.vocab_size == 100
    assert info.has_chat_template
    assert info.file_size == p.stat().st_size
    # parameters: embeddings + output norm + per layer (2 norms of n_embd, q/k norms, 4 attn, 3 ffn)
    per_layer = 2 * 256 + 2 * 64 + 256 * 256 + 2 * (128 * 256) + 256 * 256 + 3 * 512 * 256
    assert info.parameter_count == 100 * 256 + 256 + 3 * per_layer
    assert info.tensor_data_bytes == sum(t.n_bytes for t in info.tensors)
    assert info.vision is None and info.warnings == ()


def test_quant_name_from_file_type_and_from_tensors(tmp_path: Path) -> None:
    q = write_text_gguf(
        tmp_path / "q.gguf",
        weight_type=GGMLQuantizationType.Q4_K,
        file_type=LlamaFileType.MOSTLY_Q4_K_M,
    )
    assert read_gguf_info(q).file_type == "Q4_K_M"
    for ft, name in (
        (LlamaFileType.MOSTLY_Q5_K_S, "Q5_K_S"),
        (LlamaFileType.MOSTLY_Q8_0, "Q8_0"),
        (LlamaFileType.ALL_F32, "F32"),
    ):
        p = write_text_gguf(tmp_path / f"{name}.gguf", file_type=ft)
        assert read_gguf_info(p).file_type == name
    bare = write_text_gguf(
        tmp_path / "bare.gguf", weight_type=GGMLQuantizationType.Q8_0, file_type=None
    )
    info = read_gguf_info(bare)
    # The Q8_0 matrices outweigh the F16 embedding and the F32 norms.
    assert info.file_type == "Q8_0" and info.file_type_from_tensors


def test_mmproj_fields(tmp_path: Path) -> None:
    p = write_mmproj_gguf(tmp_path / "mmproj.gguf", text_embd=256, deepstack_layers=(0, 2))
    info = read_gguf_info(p)
    assert info.is_clip
    v = info.vision
    assert v is not None
    assert v.projector_type == "qwen3vl_merger" and v.has_vision_encoder
    assert (v.image_size, v.patch_size, v.embedding_length) == (64, 16, 32)
    assert (v.block_count, v.head_count, v.feed_forward_length) == (4, 2, 64)
    assert v.projection_dim == 256 and v.projector_output_dim == 256
    assert v.deepstack_layers == (0, 2)
    assert v.spatial_merge_size == 2


def test_large_tokenizer_is_read_fast(tmp_path: Path) -> None:
    """The real vocabulary (151,936 entries) must not cost seconds per read."""
    import time

    p = write_text_gguf(tmp_path / "big.gguf", n_vocab=151_936, n_embd=64, head_dim=16)
    t0 = time.perf_counter()
    info = read_gguf_info(p)
    assert info.vocab_size == 151_936
    assert time.perf_counter() - t0 < 1.0


def test_valid_pair_passes(gguf_pair: tuple[Path, Path]) -> None:
    model, mmproj = validate_model_pair(*gguf_pair)
    assert model.is_qwen3vl and mmproj.is_clip


# ------------------------------------------------------------------ unreadable files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        read_gguf_info(tmp_path / "nope.gguf")


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a folder"):
        read_gguf_info(tmp_path)


def test_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "model.gguf"
    p.write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(ModelLoadError, match=r"model.gguf is not a GGUF file"):
        read_gguf_info(p)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"not a GGUF file \(empty\)"):
        read_gguf_info(empty)


def test_unreadable(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of permissions")
    p = write_text_gguf(tmp_path / "m.gguf")
    p.chmod(0)
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_gguf_info(p)


@pytest.mark.parametrize("cut", ["last-byte", "half", "in-header", "in-first-key"])
def test_truncated(tmp_path: Path, cut: str) -> None:
    """Cut off the last byte of tensor data, half the file, or inside the header."""
    p = write_text_gguf(tmp_path / "model.gguf")
    data = p.read_bytes()
    keep = {
        "last-byte": len(data) - 1,
        "half": len(data) // 2,
        "in-header": 600,
        "in-first-key": 40,
    }
    p.write_bytes(data[: keep[cut]])
    with pytest.raises(ModelLoadError, match=r"model.gguf is truncated") as ei:
        read_gguf_info(p)
    assert "\n" not in str(ei.value)


def test_corrupt_header(tmp_path: Path) -> None:
    p = write_text_gguf(tmp_path / "model.gguf")
    data = bytearray(p.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")  # unsupported GGUF version
    p.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt GGUF header"):
        read_gguf_info(p)


# ------------------------------------------------------------------ validation rules


def test_text_model_wrong_architecture(tmp_path: Path) -> None:
    p = write_text_gguf(tmp_path / "llama.gguf", arch="llama")
    info = read_gguf_info(p)  # reading works and warns...
    assert any("not qwen3vl" in w for w in info.warnings)
    with pytest.raises(ModelLoadError, match=r"llama.gguf is a 'llama' model, not Qwen3-VL"):
        validate_text_model(info)  # ...serving refuses


def test_moe_family_accepted(tmp_path: Path) -> None:
    validate_text_model(read_gguf_info(write_text_gguf(tmp_path / "m.gguf", arch="qwen3vlmoe")))


def test_swapped_files(gguf_pair: tuple[Path, Path]) -> None:
    model, mmproj = gguf_pair
    with pytest.raises(ModelLoadError, match="mmproj.gguf is a vision projector"):
        validate_model_pair(mmproj, model)


def test_mmproj_not_clip(tmp_path: Path) -> None:
    p = write_text_gguf(tmp_path / "other.gguf")
    with pytest.raises(
        ModelLoadError, match=r"other.gguf is not a vision projector.*expected clip"
    ):
        validate_mmproj(read_gguf_info(p))


def test_mmproj_without_vision_encoder(tmp_path: Path) -> None:
    p = write_mmproj_gguf(tmp_path / "audio.gguf", has_vision_encoder=False)
    with pytest.raises(ModelLoadError, match="audio.gguf has no vision encoder"):
        validate_mmproj(read_gguf_info(p))


def test_wrong_projector_type(tmp_path: Path) -> None:
    p = write_mmproj_gguf(tmp_path / "q25.gguf", projector_type="qwen2vl_merger")
    with pytest.raises(
        ModelLoadError, match=r"projector type 'qwen2vl_merger', expected 'qwen3vl_merger'"
    ):
        validate_mmproj(read_gguf_info(p))


@pytest.mark.parametrize(
    "tensor", ["v.patch_embd.weight", "v.patch_embd.weight.1", "v.patch_embd.bias"]
)
def test_missing_crash_tensors(tmp_path: Path, tensor: str) -> None:
    p = write_mmproj_gguf(tmp_path / "mmproj.gguf", omit_tensors=(tensor,))
    with pytest.raises(
        ModelLoadError, match=rf"mmproj.gguf lacks tensor\(s\) {tensor}: llama.cpp would crash"
    ):
        validate_mmproj(read_gguf_info(p))


def test_missing_vision_key(tmp_path: Path) -> None:
    p = write_mmproj_gguf(tmp_path / "mmproj.gguf", omit_keys=("patch_size",))
    with pytest.raises(ModelLoadError, match="lacks required metadata clip.vision.patch_size"):
        validate_mmproj(read_gguf_info(p))


def test_rope_sections_too_large(tmp_path: Path) -> None:
    # head dim 64 -> at most 32 rotary pairs
    p = write_text_gguf(tmp_path / "model.gguf", head_dim=64, rope_sections=[24, 20, 20, 0])
    with pytest.raises(
        ModelLoadError, match=r"rope sections \[24, 20, 20, 0\] summing to 64.*abort"
    ):
        validate_text_model(read_gguf_info(p))


def test_rope_sections_missing(tmp_path: Path) -> None:
    p = write_text_gguf(tmp_path / "model.gguf", rope_sections=False)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="lacks qwen3vl.rope.dimension_sections"):
        validate_text_model(read_gguf_info(p))


def test_real_8b_rope_sections_accepted(tmp_path: Path) -> None:
    p = write_text_gguf(tmp_path / "model.gguf", head_dim=128, rope_sections=[24, 20, 20, 0])
    validate_text_model(read_gguf_info(p))


def test_mmproj_from_another_model(tmp_path: Path) -> None:
    model = write_text_gguf(tmp_path / "model.gguf", n_embd=256)
    mmproj = write_mmproj_gguf(tmp_path / "mmproj.gguf", text_embd=128)
    with pytest.raises(ModelLoadError) as ei:
        validate_model_pair(model, mmproj)
    assert str(ei.value) == (
        "mmproj.gguf does not belong to model.gguf: projector outputs 128-dim embeddings, "
        "the model expects 256"
    )


def test_deepstack_mismatch(tmp_path: Path) -> None:
    model = write_text_gguf(tmp_path / "model.gguf", n_deepstack=3)
    mmproj = write_mmproj_gguf(tmp_path / "mmproj.gguf", deepstack_layers=(5, 11))
    with pytest.raises(
        ModelLoadError,
        match=r"does not belong to model.gguf: it has 2 deepstack layers, "
        r"the model expects 3",
    ):
        validate_model_pair(model, mmproj)


def test_pair_reports_unreadable_file_first(tmp_path: Path, gguf_pair: tuple[Path, Path]) -> None:
    model, _ = gguf_pair
    with pytest.raises(ModelLoadError, match="no such file"):
        validate_model_pair(model, tmp_path / "missing-mmproj.gguf")


def test_fewer_layers_than_deepstack_inputs_refused(tmp_path: Path) -> None:
    """llama.cpp aborts at the first decode on such a model; refuse it before loading."""
    p = write_text_gguf(tmp_path / "model.gguf", n_layer=3, n_deepstack=3)
    with pytest.raises(ModelLoadError, match="3 layers but 3 deepstack"):
        validate_text_model(read_gguf_info(p))

"""Read and validate GGUF headers with the ``gguf`` package, before llama.cpp sees a file.

Some malformed files do not make llama.cpp return an error: they abort or crash
the whole process (a missing ``v.patch_embd.bias`` trips a GGML_ASSERT, a missing
``v.patch_embd.weight.1`` segfaults, oversized rope sections assert). A service
must not die on a bad file, so the engine calls :func:`validate_model_pair`
first and gets a :class:`~vlmserve.errors.ModelLoadError` with one line that
names the file and the problem.

Reading only parses the header (metadata and tensor descriptors) through a
memory map; tensor data is never read, so it costs the same for a 2 MB test file
and a 16 GB F16 model, apart from the tokenizer arrays in the header.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.constants import GGMLQuantizationType, LlamaFileType

from vlmserve.errors import ModelLoadError

# Text architectures llama.cpp runs as Qwen3-VL (dense and MoE share the mmproj design).
QWEN3VL_ARCHITECTURES = ("qwen3vl", "qwen3vlmoe")
CLIP_ARCHITECTURE = "clip"
QWEN3VL_PROJECTOR = "qwen3vl_merger"

# mmproj tensors whose absence crashes llama.cpp's clip loader instead of failing it:
# the two temporal halves of the Conv3d patch embedding and its bias.
REQUIRED_MMPROJ_TENSORS = ("v.patch_embd.weight", "v.patch_embd.weight.1", "v.patch_embd.bias")

# clip.vision keys llama.cpp's clip loader requires for this projector.
REQUIRED_VISION_KEYS = (
    "image_size",
    "patch_size",
    "embedding_length",
    "feed_forward_length",
    "block_count",
    "attention.head_count",
    "projection_dim",
)

_GGUF_MAGIC = b"GGUF"
# String arrays longer than this (tokenizer tokens, merges) are skipped, not decoded.
_MAX_DECODED_STRINGS = 64
_GUESSED_FLAG = int(LlamaFileType.GUESSED)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor descriptor from the header (its data is not read)."""

    name: str
    type_name: str  # ggml type: F32, F16, Q4_K, Q8_0...
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length (ne0), i.e. the input dim
    n_elements: int
    n_bytes: int
    data_offset: int  # absolute byte offset of the data in the file


@dataclass(frozen=True)
class VisionInfo:
    """The vision-encoder part of a ``clip`` (mmproj) file."""

    projector_type: str | None
    has_vision_encoder: bool
    image_size: int | None
    patch_size: int | None
    embedding_length: int | None
    feed_forward_length: int | None
    block_count: int | None
    head_count: int | None
    projection_dim: int | None
    spatial_merge_size: int | None
    deepstack_layers: tuple[
        int, ...
    ]  # vision layer indices that feed deepstack (from tensor names)
    projector_output_dim: int | None  # output size of mm.2, the embedding size the text model gets
    missing_keys: tuple[str, ...]  # REQUIRED_VISION_KEYS absent from the file


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says about a model; produced by :func:`read_gguf_info`."""

    path: Path
    file_size: int
    gguf_version: int
    architecture: str
    name: str | None
    file_type: str | None  # quantization name: Q4_K_M, Q8_0, F16...
    file_type_from_tensors: (
        bool  # True when general.file_type was absent and the dominant type was used
    )
    parameter_count: int  # sum of tensor element counts
    tensor_data_bytes: int  # bytes of tensor data (what has to sit in RAM/VRAM)
    tensors: tuple[TensorInfo, ...]
    n_layer: int | None
    n_embd: int | None
    n_ff: int | None
    n_head: int | None
    n_head_kv: int | None
    key_length: int | None  # head dim of K (explicit, else n_embd / n_head as llama.cpp does)
    value_length: int | None  # head dim of V
    context_length: int | None  # training context
    rope_sections: tuple[int, ...] | None  # M-RoPE sections (t, h, w, extra)
    n_deepstack_layers: int
    vocab_size: int | None
    has_chat_template: bool
    vision: VisionInfo | None  # set for clip files only
    warnings: tuple[str, ...]  # problems worth telling a user that do not stop `info`

    @property
    def is_clip(self) -> bool:
        return self.architecture == CLIP_ARCHITECTURE

    @property
    def is_qwen3vl(self) -> bool:
        return self.architecture in QWEN3VL_ARCHITECTURES

    @property
    def tensor_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tensors)

    def tensor(self, name: str) -> TensorInfo | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        """JSON-ready view (``vlmserve info --json``); tensors only on request."""
        d = asdict(self)
        d["path"] = str(self.path)
        if not with_tensors:
            d.pop("tensors")
            d["tensor_count"] = len(self.tensors)
        return d


class _Truncated(Exception):
    def __init__(self, needed: int, size: int) -> None:
        super().__init__(f"needs {needed} bytes, file has {size}")
        self.needed = needed
        self.size = size


class _CheckedReader(GGUFReader):
    """GGUFReader that says *truncated* instead of failing later with a reshape error.

    Every read of the header and every tensor view goes through ``_get``; the
    stock one silently returns a short slice past the end of the memory map.
    """

    def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
        end = int(offset) + np.dtype(dtype).itemsize * int(count)
        if end > self.data.shape[0]:
            raise _Truncated(end, int(self.data.shape[0]))
        return super()._get(offset, dtype, count, override_order)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
        """Parse arrays in bulk instead of one numpy view per element.

        The stock parser builds a numpy array for every element of every array,
        which takes seconds for a real tokenizer (151k tokens, 151k token
        types, 151k merges). Numeric arrays become one view (``contents()``
        still returns every value); string arrays longer than
        ``_MAX_DECODED_STRINGS`` are only walked to find their end, so their
        ``contents()`` is empty: this module only needs their length.
        """
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        itype = GGUFValueType(int(raw_itype[0]))
        n = int(alen[0])
        offs = orig_offs + 12
        types = [GGUFValueType.ARRAY, itype]
        nptype = self.gguf_scalar_to_np.get(itype)
        if nptype is not None:
            values = self._get(offs, nptype, n)
            return 12 + int(values.nbytes), [raw_itype, alen, values], [2], types
        if itype == GGUFValueType.STRING and n > _MAX_DECODED_STRINGS:
            end = self._skip_strings(offs, n)
            return end - orig_offs, [raw_itype, alen], [], types
        return super()._get_field_parts(orig_offs, raw_type)

    def _skip_strings(self, offs: int, n: int) -> int:
        buf = memoryview(self.data)
        size = len(buf)
        fmt = ">Q" if (self.byte_order == "S") == (sys.byteorder == "little") else "<Q"
        for _ in range(n):
            if offs + 8 > size:
                raise _Truncated(offs + 8, size)
            (length,) = struct.unpack_from(fmt, buf, offs)
            offs += 8 + length
        if offs > size:
            raise _Truncated(offs, size)
        return offs


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Parse a GGUF header; raise ``ModelLoadError`` if it is missing, unreadable or malformed.

    Does not judge whether the model is one vlmserve can serve (that is
    :func:`validate_model_pair`); oddities are listed in ``warnings``.
    """
    p = Path(path)
    label = p.name
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p} is a folder, not a GGUF file")
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {p}: {exc.strerror or exc}") from None
    if head[:4] != _GGUF_MAGIC:
        what = "empty" if size == 0 else f"starts with {head[:4]!r}, not b'GGUF'"
        raise ModelLoadError(f"{label} is not a GGUF file ({what})")
    if size < 24:
        raise ModelLoadError(f"{label} is truncated: {size} bytes is shorter than a GGUF header")
    try:
        reader = _CheckedReader(p)
    except _Truncated as exc:
        raise ModelLoadError(
            f"{label} is truncated: its header and tensor data need {exc.needed} bytes "
            f"but the file has {exc.size} (incomplete download?)"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {p}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, IndexError, OverflowError, UnicodeDecodeError, TypeError) as exc:
        raise ModelLoadError(f"{label} has a corrupt GGUF header: {exc}") from None
    try:
        return _build_info(p, size, reader)
    finally:
        del reader  # drop the memory map now rather than at the next GC


def _build_info(p: Path, size: int, reader: GGUFReader) -> GGUFInfo:
    fields = _Fields(reader, p.name)
    arch = fields.string("general.architecture")
    if arch is None:
        raise ModelLoadError(f"{p.name} has no general.architecture key: not a model GGUF")

    tensors = tuple(
        TensorInfo(
            name=t.name,
            type_name=_ggml_type_name(t.tensor_type),
            shape=tuple(int(x) for x in t.shape),
            n_elements=int(t.n_elements),
            n_bytes=int(t.n_bytes),
            data_offset=int(t.data_offset),
        )
        for t in reader.tensors
    )
    file_type, from_tensors = _file_type(fields.int("general.file_type"), tensors)
    warnings: list[str] = []

    vision = None
    n_layer = n_embd = n_ff = n_head = n_head_kv = key_length = value_length = None
    context_length = None
    rope_sections = None
    n_deepstack = 0
    if arch == CLIP_ARCHITECTURE:
        vision = _vision_info(fields, tensors)
    else:
        a = arch
        n_layer = fields.int(f"{a}.block_count")
        n_embd = fields.int(f"{a}.embedding_length")
        n_ff = fields.int(f"{a}.feed_forward_length")
        n_head = fields.int(f"{a}.attention.head_count")
        n_head_kv = fields.int(f"{a}.attention.head_count_kv")
        if n_head_kv is None:
            n_head_kv = n_head  # llama.cpp's default: no GQA
        key_length = fields.int(f"{a}.attention.key_length")
        value_length = fields.int(f"{a}.attention.value_length")
        if key_length is None and n_embd and n_head:
            key_length = n_embd // n_head
        if value_length is None and n_embd and n_head:
            value_length = n_embd // n_head
        context_length = fields.int(f"{a}.context_length")
        sections = fields.int_array(f"{a}.rope.dimension_sections")
        rope_sections = tuple(sections) if sections is not None else None
        n_deepstack = fields.int(f"{a}.n_deepstack_layers") or 0
        if arch not in QWEN3VL_ARCHITECTURES:
            warnings.append(
                f"architecture is {arch!r}, not qwen3vl: "
                "vlmserve can describe it but will not serve it"
            )
        elif not fields.has("tokenizer.chat_template"):
            warnings.append(
                "no tokenizer.chat_template: the built-in Qwen3-VL template will be used"
            )

    vocab = fields.array_len("tokenizer.ggml.tokens")
    if vocab is None:
        emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
        vocab = emb.shape[1] if emb is not None and len(emb.shape) > 1 else None

    return GGUFInfo(
        path=p,
        file_size=size,
        gguf_version=int(fields.int("GGUF.version") or 0),
        architecture=arch,
        name=fields.string("general.name"),
        file_type=file_type,
        file_type_from_tensors=from_tensors,
        parameter_count=sum(t.n_elements for t in tensors),
        tensor_data_bytes=sum(t.n_bytes for t in tensors),
        tensors=tensors,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        key_length=key_length,
        value_length=value_length,
        context_length=context_length,
        rope_sections=rope_sections,
        n_deepstack_layers=n_deepstack,
        vocab_size=vocab,
        has_chat_template=fields.has("tokenizer.chat_template"),
        vision=vision,
        warnings=tuple(warnings),
    )


def _vision_info(fields: _Fields, tensors: tuple[TensorInfo, ...]) -> VisionInfo:
    names = {t.name for t in tensors}
    deepstack = sorted(
        {
            int(n.split(".")[2])
            for n in names
            if n.startswith("v.deepstack.") and n.split(".")[2].isdigit()
        }
    )
    mm2 = next((t for t in tensors if t.name == "mm.2.weight"), None)
    # A linear weight is stored (in, out) in ggml order, so the output size is ne1.
    mm2_out = mm2.shape[1] if mm2 is not None and len(mm2.shape) > 1 else None
    projector = fields.string("clip.projector_type") or fields.string("clip.vision.projector_type")
    return VisionInfo(
        projector_type=projector,
        has_vision_encoder=bool(fields.value("clip.has_vision_encoder")),
        image_size=fields.int("clip.vision.image_size"),
        patch_size=fields.int("clip.vision.patch_size"),
        embedding_length=fields.int("clip.vision.embedding_length"),
        feed_forward_length=fields.int("clip.vision.feed_forward_length"),
        block_count=fields.int("clip.vision.block_count"),
        head_count=fields.int("clip.vision.attention.head_count"),
        projection_dim=fields.int("clip.vision.projection_dim"),
        spatial_merge_size=fields.int("clip.vision.spatial_merge_size"),
        deepstack_layers=tuple(deepstack),
        projector_output_dim=mm2_out,
        missing_keys=tuple(k for k in REQUIRED_VISION_KEYS if not fields.has(f"clip.vision.{k}")),
    )


def _ggml_type_name(t: Any) -> str:
    try:
        return GGMLQuantizationType(int(t)).name
    except ValueError:
        return f"type{int(t)}"


def _file_type(raw: int | None, tensors: tuple[TensorInfo, ...]) -> tuple[str | None, bool]:
    """Quantization name from general.file_type, else the dominant tensor type.

    "Dominant" counts elements of matrices only: norms and biases stay F32 in
    every quantization and would otherwise win on small models.
    """
    if raw is not None:
        base = raw & ~_GUESSED_FLAG
        try:
            name = LlamaFileType(base).name
        except ValueError:
            return f"file_type {raw}", False
        return name.removeprefix("MOSTLY_").removeprefix("ALL_"), False
    weights: Counter[str] = Counter()
    for t in tensors:
        if len([d for d in t.shape if d > 1]) >= 2:
            weights[t.type_name] += t.n_elements
    if not weights:
        for t in tensors:
            weights[t.type_name] += t.n_elements
    if not weights:
        return None, True
    return weights.most_common(1)[0][0], True


class _Fields:
    """Typed access to header key/values, with one-line errors for wrong types."""

    def __init__(self, reader: GGUFReader, label: str) -> None:
        self._fields = reader.fields
        self._label = label

    def has(self, key: str) -> bool:
        return key in self._fields

    def value(self, key: str) -> Any:
        f = self._fields.get(key)
        if f is None or not f.types or f.types[0] == GGUFValueType.ARRAY:
            return None
        try:
            return f.contents()
        except (UnicodeDecodeError, IndexError, ValueError) as exc:
            raise ModelLoadError(f"{self._label}: unreadable value for {key} ({exc})") from None

    def string(self, key: str) -> str | None:
        v = self.value(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise ModelLoadError(f"{self._label}: {key} should be a string, got {v!r}")
        return v

    def int(self, key: str) -> int | None:
        f = self._fields.get(key)
        if f is not None and f.types and f.types[0] == GGUFValueType.ARRAY:
            # Some architectures store per-layer values (e.g. head_count_kv); take the largest.
            arr = self.int_array(key)
            return max(arr) if arr else None
        v = self.value(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
            raise ModelLoadError(f"{self._label}: {key} should be an integer, got {v!r}")
        return int(v)

    def int_array(self, key: str) -> list[int] | None:
        f = self._fields.get(key)
        if f is None:
            return None
        if (
            not f.types
            or f.types[0] != GGUFValueType.ARRAY
            or f.types[-1]
            in (
                GGUFValueType.STRING,
                GGUFValueType.ARRAY,
            )
        ):
            raise ModelLoadError(f"{self._label}: {key} should be an array of integers")
        return [int(x) for x in f.contents()]

    def array_len(self, key: str) -> int | None:
        f = self._fields.get(key)
        if f is None or not f.types or f.types[0] != GGUFValueType.ARRAY:
            return None
        # parts: key length, key, value type, element type, element count, ...
        return int(f.parts[4][0])


# --------------------------------------------------------------------------- validation


def validate_text_model(info: GGUFInfo) -> None:
    """Raise ``ModelLoadError`` unless ``info`` is a Qwen3-VL text model safe to load."""
    label = info.path.name
    if info.is_clip:
        raise ModelLoadError(
            f"{label} is a vision projector (mmproj), not a text model: pass it as the mmproj file"
        )
    if not info.is_qwen3vl:
        raise ModelLoadError(
            f"{label} is a {info.architecture!r} model, not Qwen3-VL (architecture qwen3vl): "
            "vlmserve serves Qwen3-VL GGUF models only"
        )
    a = info.architecture
    for key, value in (
        ("block_count", info.n_layer),
        ("embedding_length", info.n_embd),
        ("attention.head_count", info.n_head),
    ):
        if not value:
            raise ModelLoadError(f"{label} lacks required metadata {a}.{key}")
    if info.rope_sections is None:
        raise ModelLoadError(f"{label} lacks {a}.rope.dimension_sections (M-RoPE sections)")
    head_dim = info.key_length or (info.n_embd // info.n_head)  # type: ignore[operator]
    total = sum(info.rope_sections)
    if total > head_dim // 2 or any(s < 0 for s in info.rope_sections):
        raise ModelLoadError(
            f"{label} has rope sections {list(info.rope_sections)} summing to {total}, "
            f"more than half the head dim ({head_dim}/2 = {head_dim // 2}): llama.cpp would abort"
        )
    if info.n_deepstack_layers and info.n_layer <= info.n_deepstack_layers:
        # llama.cpp adds deepstack features to the first n_deepstack text layers and aborts
        # at the first decode when there are not more text layers than that.
        raise ModelLoadError(
            f"{label} has {info.n_layer} layers but {info.n_deepstack_layers} deepstack "
            "inputs: llama.cpp needs more layers than deepstack inputs and would abort"
        )


def validate_mmproj(info: GGUFInfo) -> None:
    """Raise ``ModelLoadError`` unless ``info`` is a Qwen3-VL vision projector safe to load."""
    label = info.path.name
    if not info.is_clip:
        hint = ": pass it as the model, not the mmproj" if info.is_qwen3vl else ""
        raise ModelLoadError(
            f"{label} is not a vision projector "
            f"(architecture {info.architecture!r}, expected clip){hint}"
        )
    v = info.vision
    if v is None or not v.has_vision_encoder:
        raise ModelLoadError(f"{label} has no vision encoder (clip.has_vision_encoder is not true)")
    if v.projector_type != QWEN3VL_PROJECTOR:
        raise ModelLoadError(
            f"{label} has projector type {v.projector_type!r}, expected {QWEN3VL_PROJECTOR!r} "
            "(a Qwen3-VL mmproj)"
        )
    names = info.tensor_names
    missing = [n for n in REQUIRED_MMPROJ_TENSORS if n not in names]
    if missing:
        raise ModelLoadError(
            f"{label} lacks tensor(s) {', '.join(missing)}: llama.cpp would crash loading it"
        )
    if v.missing_keys:
        keys = ", ".join(f"clip.vision.{k}" for k in v.missing_keys)
        raise ModelLoadError(f"{label} lacks required metadata {keys}")


def validate_model_pair(
    model_path: str | Path, mmproj_path: str | Path
) -> tuple[GGUFInfo, GGUFInfo]:
    """Check a text model and its mmproj before llama.cpp loads them; return both infos.

    Raises ``ModelLoadError`` (one line naming the file) for anything that would
    make llama.cpp fail or crash: wrong architecture or projector, missing
    tensors, bad rope sections, or an mmproj built for a different model.
    """
    model = read_gguf_info(model_path)
    mmproj = read_gguf_info(mmproj_path)
    validate_text_model(model)
    validate_mmproj(mmproj)
    v = mmproj.vision
    if v is None:  # unreachable: validate_mmproj accepted it, and clip files always get one
        raise ModelLoadError(f"{mmproj.path.name} has no vision section")
    m_label, p_label = model.path.name, mmproj.path.name
    # llama.cpp checks mm.2's output size; projection_dim is the fallback when mm.2 is absent.
    out_dim = v.projector_output_dim if v.projector_output_dim is not None else v.projection_dim
    if out_dim != model.n_embd:
        raise ModelLoadError(
            f"{p_label} does not belong to {m_label}: projector outputs {out_dim}-dim embeddings, "
            f"the model expects {model.n_embd}"
        )
    n_ds = len(v.deepstack_layers)
    if n_ds != model.n_deepstack_layers:
        raise ModelLoadError(
            f"{p_label} does not belong to {m_label}: it has {n_ds} deepstack layers, "
            f"the model expects {model.n_deepstack_layers} "
            f"({model.architecture}.n_deepstack_layers)"
        )
    return model, mmproj

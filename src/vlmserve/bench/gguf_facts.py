"""Facts about a GGUF text model read from its header: quantization, sizes, KV shape.

Only the header is parsed (the ``gguf`` package memory-maps the file; tensor
data is not read), so this is cheap even for multi-GB files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from vlmserve.bench.workload import BenchError


@dataclass(frozen=True)
class ModelFacts:
    path: str
    file_size_bytes: int
    quant_type: str  # "F16", "Q8_0", "Q4_K_M", ... (general.file_type), "unknown"
    architecture: str
    name: str | None
    n_layer: int
    n_embd: int
    n_head_kv: int
    head_dim: int
    tensor_bytes: int  # all tensors
    block_bytes: int  # the repeated layers (attention + FFN + norms)
    output_bytes: int  # the output (LM head) matrix and final norm
    embedding_bytes: int  # token_embd: one row is read per token, not the matrix
    output_tied: bool  # no output.weight: the LM head reuses token_embd

    @property
    def weight_bytes_per_token(self) -> int:
        """Weight bytes one decode step streams from memory: every layer and the LM head.

        The token embedding table is not counted (one row per token) unless it doubles
        as the LM head (tied output), in which case it is read whole."""
        lm_head = self.embedding_bytes if self.output_tied else 0
        return self.block_bytes + self.output_bytes + lm_head

    @property
    def kv_bytes_per_cell(self) -> int:
        """K and V, F16, over all layers: bytes of KV cache per context cell."""
        return self.n_layer * 2 * self.n_head_kv * self.head_dim * 2

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d["weight_bytes_per_token"] = self.weight_bytes_per_token
        d["kv_bytes_per_cell"] = self.kv_bytes_per_cell
        return d


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception:  # malformed field: treat as absent
        return default


def quant_name(file_type: int | None) -> str:
    if file_type is None:
        return "unknown"
    from gguf.constants import LlamaFileType

    try:
        name = LlamaFileType(int(file_type)).name
    except ValueError:
        return f"ftype {file_type}"
    return {"ALL_F32": "F32"}.get(name, name.removeprefix("MOSTLY_"))


def read_model_facts(path: str | Path) -> ModelFacts:
    """Parse the header of a text-model GGUF; ``BenchError`` when it cannot be read."""
    from gguf import GGUFReader

    p = Path(path)
    try:
        reader = GGUFReader(str(p))
    except Exception as exc:  # the gguf package raises ValueError, struct.error, OSError...
        raise BenchError(f"cannot read GGUF header of {p}: {exc}") from exc
    arch = str(_field(reader, "general.architecture", "unknown"))
    n_embd = int(_field(reader, f"{arch}.embedding_length", 0) or 0)
    n_head = int(_field(reader, f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_head) or n_head)
    head_dim = int(_field(reader, f"{arch}.attention.key_length", 0) or 0) or (
        n_embd // max(n_head, 1))
    block = output = embd = total = 0
    has_output = False
    for t in reader.tensors:
        n = int(t.n_bytes)
        total += n
        if t.name.startswith("blk."):
            block += n
        elif t.name in ("output.weight", "output_norm.weight"):
            output += n
            has_output = has_output or t.name == "output.weight"
        elif t.name == "token_embd.weight":
            embd = n
    return ModelFacts(
        path=str(p),
        file_size_bytes=p.stat().st_size,
        quant_type=quant_name(_field(reader, "general.file_type")),
        architecture=arch,
        name=_field(reader, "general.name"),
        n_layer=int(_field(reader, f"{arch}.block_count", 0) or 0),
        n_embd=n_embd,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        tensor_bytes=total,
        block_bytes=block,
        output_bytes=output,
        embedding_bytes=embd,
        output_tied=not has_output,
    )

"""Facts about a GGUF text model read from its header: quantization, sizes, KV shape.

Only the header is parsed (the ``gguf`` package memory-maps the file; tensor
data is not read), so this is cheap even for multi-GB files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from vlmserve.bench.workload import BenchError
from vlmserve.errors import VlmserveError
from vlmserve.models.gguf_info import read_gguf_info
from vlmserve.models.memory import ModelShape


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
    kv_bytes_per_cell: int  # K and V (F16) over all layers, as models.memory computes it

    @property
    def weight_bytes_per_token(self) -> int:
        """Weight bytes one decode step streams from memory: every layer and the LM head.

        The token embedding table is not counted (one row per token) unless it doubles
        as the LM head (tied output), in which case it is read whole."""
        lm_head = self.embedding_bytes if self.output_tied else 0
        return self.block_bytes + self.output_bytes + lm_head

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d["weight_bytes_per_token"] = self.weight_bytes_per_token
        return d


def read_model_facts(path: str | Path) -> ModelFacts:
    """Facts from a text-model GGUF header (``models.gguf_info``); ``BenchError`` if unreadable."""
    try:
        info = read_gguf_info(path)
    except VlmserveError as exc:
        raise BenchError(f"cannot read GGUF header of {path}: {exc.message}") from exc
    block = output = embd = 0
    has_output = False
    for t in info.tensors:
        if t.name.startswith("blk."):
            block += t.n_bytes
        elif t.name in ("output.weight", "output_norm.weight"):
            output += t.n_bytes
            has_output = has_output or t.name == "output.weight"
        elif t.name == "token_embd.weight":
            embd = t.n_bytes
    n_head = info.n_head or 1
    return ModelFacts(
        path=str(info.path),
        file_size_bytes=info.file_size,
        quant_type=info.file_type or "unknown",
        architecture=info.architecture or "unknown",
        name=info.name,
        n_layer=info.n_layer or 0,
        n_embd=info.n_embd or 0,
        n_head_kv=info.n_head_kv or n_head,
        head_dim=info.key_length or ((info.n_embd or 0) // n_head),
        tensor_bytes=info.tensor_data_bytes,
        block_bytes=block,
        output_bytes=output,
        embedding_bytes=embd,
        output_tied=not has_output,
        kv_bytes_per_cell=ModelShape.from_infos(info).kv_bytes_per_cell(),
    )

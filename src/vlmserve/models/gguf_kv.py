"""Read a GGUF file's tokenizer arrays quickly (tokens, token types, merges).

``gguf.GGUFReader`` builds a numpy view per string: for the 151,936 tokens and
151,387 merges of the Qwen vocabulary that took over 10 s on this machine. This
reader walks the key-value section once with ``struct`` and decodes only the
three arrays a demo model copies (about 0.2 s). Tensor data is never read.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# GGUF value types -> struct format of a scalar (8 = string, 9 = array)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_WANTED = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("truncated GGUF header")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("<Q")
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n:
            raise ValueError("truncated GGUF string")
        self.pos += n
        return raw.decode("utf-8")

    def skip_value(self, vtype: int) -> None:
        self.value(vtype, keep=False)

    def value(self, vtype: int, keep: bool = True):
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown GGUF value type {vtype}")
        etype, n = self.take("<I"), self.take("<Q")
        if etype in _SCALAR and etype != 7:
            dtype = np.dtype(_SCALAR[etype])
            end = self.pos + n * dtype.itemsize
            arr = np.frombuffer(self.data, dtype, n, self.pos) if keep else None
            self.pos = end
            return arr
        return [self.value(etype, keep) for _ in range(n)]


def read_tokenizer_arrays(path: str | Path) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of a GGUF file; ValueError when one is missing."""
    data = Path(path).read_bytes()
    cur = _Cursor(data)
    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    cur.pos = 4
    version = cur.take("<I")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    cur.take("<Q")  # tensor count
    found: dict[str, object] = {}
    for _ in range(cur.take("<Q")):
        key, vtype = cur.string(), cur.take("<I")
        if key in _WANTED:
            found[key] = cur.value(vtype)
        else:
            cur.skip_value(vtype)
        if len(found) == len(_WANTED):
            break
    missing = [k for k in _WANTED if k not in found]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    tokens, types, merges = (found[k] for k in _WANTED)
    return list(tokens), [int(t) for t in types], list(merges)  # type: ignore[arg-type]

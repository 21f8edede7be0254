"""Quantizing a GGUF text model with llama.cpp's own quantizer."""

from __future__ import annotations

import os
from pathlib import Path

import llama_cpp

from vlmserve.engine.llamacpp.logs import LogCapture
from vlmserve.errors import VlmserveError

# The quantization types people run Qwen3-VL-8B at, mapped to llama.cpp's ftypes.
QUANT_TYPES: dict[str, int] = {
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q5_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
}


def quantize_gguf(src: str | Path, dst: str | Path, qtype: str, threads: int = 0) -> Path:
    """Write ``dst``, a ``qtype`` quantization of the GGUF text model ``src``.

    Tensors whose row size does not fit the K-quant block (256) fall back to a
    compatible type, as llama.cpp's ``llama-quantize`` does.
    """
    key = qtype.upper()
    if key not in QUANT_TYPES:
        raise VlmserveError(f"unknown quantization type {qtype!r}; choose one of "
                            f"{', '.join(QUANT_TYPES)}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise VlmserveError(f"model file not found: {src}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[key]
    params.nthread = threads or (os.cpu_count() or 1)
    logs = LogCapture()
    try:
        tmp = dst.with_name(dst.name + ".partial")
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            tmp.unlink(missing_ok=True)
            raise VlmserveError(f"quantizing {src.name} to {key} failed: "
                                f"{logs.last_error() or 'llama.cpp returned ' + str(rc)}")
        tmp.replace(dst)  # a half-written file never carries the final name
    finally:
        logs.close()
    return dst

"""``vlmserve quantize IN.gguf OUT.gguf --type Q4_K_M``: llama.cpp's own quantizer."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a GGUF text model (Q4_K_M, Q5_K_S, Q8_0, F16)")
    p.add_argument("src", help="input GGUF (F16 or F32)")
    p.add_argument("dst", help="output GGUF")
    p.add_argument("--type", dest="qtype", required=True,
                   help="Q4_K_M | Q5_K_S | Q5_K_M | Q8_0 | Q4_0 | F16")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmserve.engine.llamacpp.quantize import quantize_gguf  # heavy import, only here

    out = quantize_gguf(Path(args.src), Path(args.dst), args.qtype, threads=args.threads)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0

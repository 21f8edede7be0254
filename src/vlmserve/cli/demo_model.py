"""``vlmserve demo-model DIR``: write a random-weight Qwen3-VL GGUF pair for offline use."""

from __future__ import annotations

import argparse

from vlmserve.models.demo import SHAPES, VOCABS, write_demo_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-model", help="write a tiny random-weight Qwen3-VL model (offline demo)",
                       description="Write DIR/model.gguf and DIR/mmproj.gguf: the Qwen3-VL GGUF "
                       "format with random weights. Answers are gibberish; everything else "
                       "(images, streaming, caches, API) works as with the real model.")
    p.add_argument("dir", help="output folder")
    p.add_argument("--size", choices=list(SHAPES), default="tiny",
                   help="tiny (~8 MB, default), small (~0.3 GB), medium (~1.8 GB), "
                   "8b-layers (real 8B layer sizes, 8 layers, ~3.3 GB)")
    p.add_argument("--quant", choices=["Q8_0", "Q5_K_S", "Q4_K_M"], default=None,
                   help="also quantize the text model with llama.cpp's quantizer")
    p.add_argument("--vocab", choices=list(VOCABS), default="demo",
                   help="demo: a small BPE trained here (default); qwen: Qwen's real 151,936-token "
                   "vocabulary, from the llama-cpp-python sdist (cache: VLMSERVE_VOCAB_CACHE, "
                   "else fetched with pip); adds 151,936-row embedding and output matrices")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = write_demo_model(args.dir, size=args.size, seed=args.seed, vocab=args.vocab)
    if args.quant:
        from vlmserve.engine.llamacpp.quantize import quantize_gguf  # loads llama.cpp

        # Writes a .partial beside it and renames it over the F16 file.
        quantize_gguf(files.model, files.model, args.quant)
    print(f"wrote {files.model}")
    print(f"wrote {files.mmproj}")
    print(f"try: vlmserve describe --model {files.model} --mmproj {files.mmproj} IMAGE")
    return 0

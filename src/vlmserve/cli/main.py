"""``vlmserve`` entry point: builds the argparse tree from the subcommand modules.

Each subcommand module exposes ``register(subparsers)`` which adds its parser
and sets ``func`` (taking the parsed args, returning an exit code). They are
imported by name below, so a renamed or missing module fails loudly instead of
vanishing from ``--help``; each keeps its heavy imports (llama.cpp, Gradio,
uvicorn) inside its ``run``, so ``vlmserve --help`` stays fast. Errors a
user can act on (``VlmserveError``) become one line on stderr and exit 1; no
traceback reaches the user.
"""

from __future__ import annotations

import argparse
import sys

from vlmserve.cli import (
    bench,
    cert,
    demo_model,
    describe,
    info,
    models,
    pull,
    quantize,
    serve,
    soak,
    watch,
)
from vlmserve.errors import VlmserveError

# Subcommand modules, in help order.
SUBCOMMANDS = (describe, serve, cert, info, demo_model, quantize, bench, soak, pull, models,
               watch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmserve",
        description="Local, private image Q&A with Qwen3-VL GGUF models on llama.cpp.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VlmserveError as exc:
        print(f"vlmserve: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vlmserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

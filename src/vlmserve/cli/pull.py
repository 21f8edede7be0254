"""``vlmserve pull [REPO] [--quant Q] [--source hf|modelscope|auto] [--dir DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlmserve.models.pull import COMMON_QUANTS, DEFAULT_QUANT, DEFAULT_REPO, SOURCES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pull",
        help="download a Qwen3-VL GGUF model and its mmproj (verified)",
        description=(
            "Download the text GGUF of the chosen quantization and the vision projector "
            "(mmproj) from Hugging Face or ModelScope into the models folder, checking sizes "
            "and SHA-256. An interrupted pull resumes when run again."
        ),
    )
    p.add_argument(
        "repo", nargs="?", default=DEFAULT_REPO, help=f"repository (default {DEFAULT_REPO})"
    )
    p.add_argument(
        "--quant",
        default=DEFAULT_QUANT,
        metavar="QUANT",
        help=f"quantization: {', '.join(COMMON_QUANTS)} or any the repo offers "
        f"(default {DEFAULT_QUANT})",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="hub to use (auto: Hugging Face, then ModelScope)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="models folder (default $VLMSERVE_HOME/models or ~/.cache/vlmserve/models)",
    )
    p.add_argument("--name", default=None, help="local model name (default REPO-QUANT)")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmserve.models.memory import fmt_bytes
    from vlmserve.models.pull import pull_model

    def status(msg: str) -> None:
        print(f"vlmserve: {msg}", file=sys.stderr)

    entry = pull_model(
        repo=args.repo,
        quant=args.quant,
        source=args.source,
        models_dir=args.dir,
        progress=not args.quiet,
        name=args.name,
        revision=args.revision,
        on_status=None if args.quiet else status,
    )
    print(f"{entry.name}\t{entry.quant}\t{fmt_bytes(entry.size_bytes)}\t{entry.folder}")
    return 0

"""``vlmserve models`` (table), ``vlmserve models rm NAME``, ``vlmserve models default NAME``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time to keep `vlmserve --help` fast
    from vlmserve.models.registry import ModelRegistry


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list, remove or pick the default of the installed models",
        description="List the models in the models folder, remove one, or choose the default.",
    )
    dir_help = "models folder (default $VLMSERVE_HOME/models or ~/.cache/vlmserve/models)"
    p.add_argument("--dir", type=Path, default=None, help=dir_help)
    p.add_argument("--json", action="store_true", help="machine-readable list")
    p.set_defaults(func=run_list)
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    rm = sub.add_parser("rm", help="delete an installed model's folder")
    rm.add_argument("name")
    rm.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help=dir_help)
    rm.set_defaults(func=run_rm)
    default = sub.add_parser("default", help="make a model the default")
    default.add_argument("name")
    default.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help=dir_help)
    default.set_defaults(func=run_default)


def _registry(args: argparse.Namespace) -> ModelRegistry:
    from vlmserve.models.registry import ModelRegistry, default_models_dir

    return ModelRegistry(args.dir if args.dir is not None else default_models_dir())


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vlmserve.models.memory import fmt_bytes

    reg = _registry(args)
    entries = reg.list_models()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    console = Console()
    if not entries:
        console.print(f"no models in {reg.models_dir}; run [bold]vlmserve pull[/bold] to get one")
    else:
        default_name = None
        if any(e.complete for e in entries):
            default_name = reg.default_model().name
        table = Table(title=str(reg.models_dir), title_justify="left")
        for col in ("", "NAME", "QUANT", "SIZE", "MMPROJ", "SOURCE"):
            table.add_column(col, no_wrap=col in ("NAME", "QUANT", "SIZE"))
        for e in entries:
            table.add_row(
                "*" if e.name == default_name else "",
                e.name,
                e.quant or "?",
                fmt_bytes(e.size_bytes),
                e.mmproj_path.name if e.mmproj_path else "[red]missing[/red]",
                e.repo or ("hand-copied" if e.source is None else e.source),
            )
        console.print(table)
        for e in entries:
            if e.note:
                console.print(f"note: {e.name}: {e.note}")
        if default_name:
            console.print("* default model")
    for partial in reg.partial_downloads():
        console.print(
            f"unfinished download: {partial} (run the same pull again to resume, or delete it)"
        )
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from vlmserve.models.memory import fmt_bytes

    reg = _registry(args)
    size = reg.get(args.name).size_bytes
    removed = reg.remove(args.name)
    print(f"removed {removed} ({fmt_bytes(size)} freed)", file=sys.stderr)
    return 0


def run_default(args: argparse.Namespace) -> int:
    entry = _registry(args).set_default(args.name)
    print(f"default model: {entry.name}", file=sys.stderr)
    return 0

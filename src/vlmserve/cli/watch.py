"""``vlmserve watch DIR --output FILE``: describe each new image in a drop folder."""

from __future__ import annotations

import argparse
import os
import sys

from vlmserve.batch.results import format_for, open_results
from vlmserve.batch.signals import StopFlag
from vlmserve.cli.batch_args import add_output_args, add_task_args, image_options, task_from_args
from vlmserve.cli.engine_args import add_model_args, engine_config_from_args
from vlmserve.cli.watch_stream import add_stream_args, positive_float, run_streams
from vlmserve.errors import VlmserveError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="describe each new image in a folder, or camera frames",
                       description="Watch DIR (recursively) and append one line per new image "
                       "to --output once the file is completely written (unchanged across two "
                       "polls, and it decodes). Each picture is described once, also across "
                       "restarts with the same output file. Or, with --stream, describe a "
                       "frame of each camera every --every seconds (docs/video.md). Stop with "
                       "Ctrl-C or SIGTERM.")
    p.add_argument("dir", metavar="DIR", nargs="?", default=None)
    add_task_args(p)
    add_output_args(p, required=True)
    p.add_argument("--interval", type=positive_float, default=1.0,
                   help="seconds between polls (default 1)")
    p.add_argument("--new-only", action="store_true",
                   help="skip the images already in DIR when the watch starts")
    p.add_argument("--broken-after", type=positive_float, default=60.0, metavar="S",
                   help="a complete-looking file that still does not decode after S seconds "
                   "gets an error line (default 60)")
    add_stream_args(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmserve.batch.watch import watch_folder
    from vlmserve.engine.factory import create_engine

    if args.stream and args.dir is not None:
        raise VlmserveError("give a folder or --stream sources, not both")
    task = task_from_args(args)
    options = image_options(args, task)
    if args.stream:
        return run_streams(args, task, options)
    if args.dir is None:
        raise VlmserveError("give a folder to watch, or --stream URL")
    if not os.path.isdir(args.dir):
        raise VlmserveError(f"{args.dir} is not a folder")
    fmt = format_for(args.output, args.format)
    existing = open_results(args.output, fmt, resume=True)  # a watch always continues its file
    if existing.repaired_bytes:
        print(f"vlmserve: cut a partial last line ({existing.repaired_bytes} bytes) from "
              f"{args.output}", file=sys.stderr)
    with StopFlag() as flag:
        config = engine_config_from_args(args, n_parallel=args.parallel)
        with create_engine(config) as engine:
            if flag.set:
                return 0
            print(f"vlmserve: watching {args.dir} every {args.interval:g} s, results in "
                  f"{args.output}; Ctrl-C to stop", file=sys.stderr, flush=True)
            outcome = watch_folder(engine, task, args.dir, args.output, fmt, existing,
                                   args.parallel, options, flag, args.interval,
                                   args.broken_after, args.new_only,
                                   progress_enabled=False if args.no_progress else None)
    summary = (f"{outcome.written} lines written to {args.output} ({outcome.errors} errors, "
               f"{outcome.skipped} already described)")
    if outcome.write_error:
        print(f"vlmserve: error: {outcome.write_error}; {summary}", file=sys.stderr)
        return 1
    print(f"vlmserve: watch stopped: {summary}", file=sys.stderr)
    return 0

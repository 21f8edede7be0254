"""The stall scenario's command line: its flags on ``vlmserve bench`` and the two ways to
run it (the engine loaded here through ``create_engine``, or ``--url`` a running server).

Kept apart from ``stall.py`` (protocol and figures, no model) and from the standard
bench's orchestration, so ``cli/bench.py`` only registers these flags and dispatches.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from vlmserve.bench import stall
from vlmserve.bench.workload import BenchError, parse_image_size


def add_stall_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``--scenario stall`` (the standard workload ignores them)."""
    g = p.add_argument_group("scenario stall (--scenario stall)")
    g.add_argument("--scenario", choices=["standard", "stall", "restart", "video"],
                   default="standard",
                   help="standard: the TTFT / tok/s workload; stall: one stream decodes while "
                   "--newcomers users send new pictures at once (uses --image, --runs, "
                   "--threads, --url, --model/--mmproj/--demo, --json, --markdown); "
                   "restart: a new picture's TTFT, then the same after reloading the engine "
                   "over the same --image-cache-dir (the disk tier; --model/--mmproj); "
                   "video: a --clip-seconds clip question (frames, tokens, encode ms, TTFT)")
    g.add_argument("--clip-seconds", type=float, default=10.0,
                   help="--scenario video: the clip's length (default 10)")
    g.add_argument("--newcomers", type=int, default=3,
                   help="users sending a new picture at the same moment (default 3)")
    g.add_argument("--newcomer-tokens", type=int, default=32,
                   help="greedy output tokens of each newcomer (default 32)")
    g.add_argument("--stream-tokens", type=int, default=2048,
                   help="max_tokens of the decoding stream; it is stopped once the burst is "
                   "over (default 2048)")
    g.add_argument("--warm-tokens", type=int, default=20,
                   help="tokens the stream has streamed before the burst (default 20)")
    g.add_argument("--threads-vision", type=int, default=0,
                   help="vision-encoder threads, in process (default: the engine's choice)")
    g.add_argument("--seed-base", type=int, default=None,
                   help="seed of the generated pictures (default: random, so repeated runs "
                   "against one server never hit its image cache; fix it to repeat a run)")
    g.add_argument("--parallel", type=int, default=0,
                   help="slots, in process (default: newcomers + 1)")


def workload_from_args(args: argparse.Namespace) -> stall.StallWorkload:
    width, height = parse_image_size(args.image)
    if args.threads < 0 or args.threads_vision < 0:
        raise BenchError("--threads and --threads-vision must be >= 0")
    if args.parallel < 0:
        raise BenchError("--parallel must be >= 0")
    seeded = {} if args.seed_base is None else {"seed_base": args.seed_base}
    return stall.StallWorkload(width=width, height=height, newcomers=args.newcomers,
                               newcomer_tokens=args.newcomer_tokens,
                               stream_tokens=args.stream_tokens, warm_tokens=args.warm_tokens,
                               runs=args.runs, **seeded)


def run_cli(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """``vlmserve bench --scenario stall ...``: measure, then write JSON / markdown / text."""
    w = workload_from_args(args)
    command = shlex.join(["vlmserve", *(sys.argv[1:] if argv is None else argv)])
    progress = (lambda _: None) if args.no_progress else (
        lambda text: print(f"vlmserve bench: {text}", file=sys.stderr, flush=True))
    if args.url:
        if args.demo or args.baseline or args.quant_table:
            raise BenchError("--url measures a running server: it cannot be combined with "
                             "--demo, --baseline or --quant-table")
        doc = run_http(args, w, command, progress)
    else:
        doc = run_inprocess(args, w, command, progress)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    elif args.json:
        Path(args.json).expanduser().write_text(text)
    if args.json != "-":
        sys.stdout.write(stall.render_markdown(doc))
    if not doc["results"]["summary"]["stream_outlasted_burst"]:
        print("vlmserve bench: warning: the decoding stream ended before a burst did; "
              "raise --stream-tokens", file=sys.stderr)
    return 0


def _ctx_for(w: stall.StallWorkload) -> int:
    from vlmserve.images import image_token_count

    need = image_token_count(w.width, w.height) + 2 + 128 + max(w.stream_tokens,
                                                                 w.newcomer_tokens)
    return max(256, -(-need // 256) * 256)


def run_inprocess(args: argparse.Namespace, w: stall.StallWorkload, command: str,
                  progress) -> dict[str, Any]:
    from vlmserve.bench.stall_targets import InProcessStallTarget
    from vlmserve.bench.suite import demo_model
    from vlmserve.config import EngineConfig
    from vlmserve.engine.factory import create_engine
    from vlmserve.models.demo import SHAPES
    from vlmserve.models.registry import resolve_model_paths

    t0 = time.perf_counter()
    doc = stall.base_doc(w, "in-process", command)
    with ExitStack() as stack:
        if args.demo:
            if args.demo not in SHAPES:
                raise BenchError(f"--demo must be one of {', '.join(SHAPES)}")
            if args.model:
                raise BenchError("pass either --demo SIZE or --model FILE, not both")
            demo_dir = Path(args.demo_dir).expanduser() if args.demo_dir else None
            model, mmproj = stack.enter_context(demo_model(args.demo, demo_dir, args.vocab))
        else:
            model, mmproj = resolve_model_paths(args.model, args.mmproj)
        for label, path in (("model", model), ("mmproj", mmproj)):
            if path is None or not Path(path).is_file():
                raise BenchError(f"{label} file not found: {path}")
        config = EngineConfig(
            model_path=model, mmproj_path=mmproj,
            n_ctx_per_slot=args.ctx_size or _ctx_for(w),
            n_parallel=args.parallel or stall.default_parallel(w.newcomers),
            n_threads=args.threads, n_threads_vision=args.threads_vision,
            n_gpu_layers=args.n_gpu_layers)
        progress("loading the model")
        t_load = time.perf_counter()
        engine = stack.enter_context(create_engine(config))
        load_ms = (time.perf_counter() - t_load) * 1000
        info = engine.info
        target = InProcessStallTarget(engine, max(w.width, w.height))
        doc["results"] = stall.measure(target, w, progress)
    doc["model"] = {"path": str(model), "mmproj_path": str(mmproj), "demo_size": args.demo}
    doc["engine"] = {
        "threads": info.threads, "threads_vision": config.threads_vision,
        "threads_vision_asked": args.threads_vision, "n_parallel": info.n_parallel,
        "n_ctx_per_slot": info.n_ctx_per_slot, "n_gpu_layers": args.n_gpu_layers,
        "load_ms": round(load_ms, 1), "url": None,
    }
    return stall.finish_doc(doc, t0)


def run_http(args: argparse.Namespace, w: stall.StallWorkload, command: str,
             progress) -> dict[str, Any]:
    from vlmserve.bench.stall_targets import HttpStallTarget

    t0 = time.perf_counter()
    doc = stall.base_doc(w, "http", command)
    target = HttpStallTarget(args.url, api_key=args.api_key)
    try:
        doc["results"] = stall.measure(target, w, progress)
    finally:
        target.close()
    doc["model"] = {"path": args.model, "mmproj_path": args.mmproj, "served_as": target.model}
    # The server's own settings are not visible over the API: what the user passed (if
    # anything) is recorded as given, for the report's header.
    doc["engine"] = {"threads": args.threads or None,
                     "threads_vision": args.threads_vision or None,
                     "n_parallel": args.parallel or None, "url": target.base_url}
    return stall.finish_doc(doc, t0)

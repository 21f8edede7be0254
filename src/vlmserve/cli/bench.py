"""``vlmserve bench``: TTFT, tok/s, concurrency, roofline, baseline and quantization figures.

Examples::

    vlmserve bench --demo small --runs 3 --markdown
    vlmserve bench --model Qwen3VL-8B-Instruct-Q4_K_M.gguf --mmproj mmproj-F16.gguf \\
        --baseline llama-cpp-python --json results.json
    vlmserve bench --url http://127.0.0.1:8000 --runs 5
    vlmserve bench --demo small --quant-table --markdown
    vlmserve bench --scenario stall --demo small --newcomers 3 --threads 1 --threads-vision 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from vlmserve.models.demo import SHAPES

DEMO_SIZES = tuple(SHAPES)  # the demo model sizes, named where they are defined


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure TTFT, tok/s, concurrency and memory on this machine",
        description="Run the Qwen3-VL image Q&A workload (one generated picture, a question "
        "of exactly --prompt-tokens tokens, --max-tokens greedy output tokens) and report "
        "medians: image encode, cold and warm TTFT, prefill and decode tok/s, aggregate tok/s "
        "for each concurrency level, peak RSS, the decode roofline; optionally against "
        "llama-cpp-python, over HTTP, or for several quantizations.")
    g = p.add_argument_group("model (one of)")
    g.add_argument("--model", help="text model GGUF (env VLMSERVE_MODEL)")
    g.add_argument("--mmproj", help="vision projector GGUF (default: mmproj*.gguf beside it)")
    g.add_argument("--demo", metavar="SIZE",
                   help="write and use a random-weight demo model (text + mmproj): tiny (~8 MB), small "
                   "(~0.33 GB), medium (~1.8 GB), 8b-layers (~3.6 GB)")
    g.add_argument("--demo-dir", help="keep the demo model (and quantizations) here and reuse "
                   "them next time (default: a temporary folder)")
    g.add_argument("--vocab", choices=["auto", "demo", "qwen"], default="auto",
                   help="with --demo: the small trained vocabulary or Qwen's real 151,936 "
                   "tokens (see demo-model --vocab); auto (default): qwen for 8b-layers, "
                   "whose figures stand for the real model's speed, demo for the others")
    g.add_argument("--url", help="benchmark a running server (vlmserve serve, or any "
                   "OpenAI-compatible one) instead of loading the model here")
    g.add_argument("--api-key", help="bearer token for --url")
    w = p.add_argument_group("workload")
    w.add_argument("--image", default="768x768", help="picture size WxH (default 768x768)")
    w.add_argument("--prompt-tokens", type=int, default=15,
                   help="exact text tokens of each question (default 15)")
    w.add_argument("--max-tokens", type=int, default=100,
                   help="output tokens per request, forced (default 100)")
    w.add_argument("--runs", type=int, default=3, help="measured runs (default 3)")
    w.add_argument("--concurrency", default="1,2,4,8",
                   help="stream counts to measure (default 1,2,4,8)")
    w.add_argument("--no-concurrency", action="store_true",
                   help="skip the concurrency levels")
    e = p.add_argument_group("engine")
    e.add_argument("--threads", type=int, default=0,
                   help="text-model threads (default: half the cores above 4; on smaller machines every core, less one for the vision encoder)")
    e.add_argument("--ctx-size", type=int, default=0,
                   help="KV cells per slot (default: just enough for the workload)")
    e.add_argument("--n-gpu-layers", type=int, default=-1,
                   help="layers to offload to a GPU (-1: all the build supports)")
    o = p.add_argument_group("extras and output")
    o.add_argument("--baseline", choices=["llama-cpp-python"],
                   help="also run the workload through llama-cpp-python's Llama + "
                   "MTMDChatHandler and print ratios")
    o.add_argument("--baseline-flash-attn", action="store_true",
                   help="run the baseline with Llama(flash_attn=True) instead of its default "
                   "(False; llama.cpp itself, and vlmserve, default to auto)")
    o.add_argument("--quant-table", action="store_true",
                   help="instead: quantize the F16 model to Q8_0, Q5_K_S, Q4_K_M and run one "
                   "stream on each (use --demo small or bigger)")
    o.add_argument("--no-roofline", action="store_true",
                   help="skip the memory-bandwidth measurement")
    o.add_argument("--json", metavar="OUT", help="write every figure as JSON to OUT ('-': stdout)")
    o.add_argument("--markdown", action="store_true", help="print markdown tables")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    from vlmserve.bench.stall_run import add_stall_args

    add_stall_args(p)
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace, argv: list[str] | None = None):
    from vlmserve.bench.suite import BenchOptions
    from vlmserve.bench.workload import BenchError, Workload, parse_concurrency, parse_image_size
    from vlmserve.models.registry import resolve_model_paths

    if args.demo is not None and args.demo not in DEMO_SIZES:
        raise BenchError(f"--demo must be one of {', '.join(DEMO_SIZES)}, got {args.demo!r}")
    width, height = parse_image_size(args.image)
    levels = () if args.no_concurrency else parse_concurrency(args.concurrency)
    workload = Workload(width=width, height=height, prompt_tokens=args.prompt_tokens,
                        max_tokens=args.max_tokens, runs=args.runs, concurrency=levels)
    if args.threads < 0:
        raise BenchError(f"--threads must be >= 0, got {args.threads}")
    if args.ctx_size and args.ctx_size < 256:
        raise BenchError(f"--ctx-size must be >= 256, got {args.ctx_size}")
    vocab = args.vocab
    if vocab == "auto":
        vocab = "qwen" if args.demo == "8b-layers" else "demo"
    if vocab != "demo" and not args.demo:
        raise BenchError("--vocab chooses a demo model's vocabulary: pass it with --demo SIZE")
    if args.demo and args.model:
        raise BenchError("pass either --demo SIZE or --model FILE, not both")
    if args.url and (args.demo or args.baseline or args.quant_table):
        raise BenchError("--url measures a running server: it cannot be combined with "
                         "--demo, --baseline or --quant-table")
    if args.quant_table and args.baseline:
        raise BenchError("--quant-table and --baseline are separate runs; pass one of them")
    model = mmproj = None
    if args.url:
        model = Path(args.model).expanduser() if args.model else None
        mmproj = Path(args.mmproj).expanduser() if args.mmproj else None
    elif not args.demo:
        model, mmproj = resolve_model_paths(args.model, args.mmproj)
        if not model.is_file():
            raise BenchError(f"model file not found: {model}")
    argv = sys.argv[1:] if argv is None else argv
    return BenchOptions(
        workload=workload, command=shlex.join(["vlmserve", *argv]), model=model, mmproj=mmproj,
        demo_size=args.demo, demo_vocab=vocab, demo_dir=Path(args.demo_dir).expanduser() if args.demo_dir else None,
        threads=args.threads, ctx_size=args.ctx_size, n_gpu_layers=args.n_gpu_layers,
        baseline=args.baseline, baseline_flash_attn=args.baseline_flash_attn, url=args.url, api_key=args.api_key,
        quant_table=args.quant_table, roofline=not args.no_roofline,
        concurrency=not args.no_concurrency)


def run(args: argparse.Namespace) -> int:
    if args.scenario == "restart":
        from vlmserve.bench.restart import run_cli as run_restart

        return run_restart(args)
    if args.scenario == "video":
        from vlmserve.bench.video import run_cli as run_video

        return run_video(args)
    if args.scenario == "stall":
        from vlmserve.bench.stall_run import run_cli

        return run_cli(args)
    from vlmserve.bench.phase_bar import PhaseBar
    from vlmserve.bench.report import render_markdown, render_text
    from vlmserve.bench.suite import run as run_suite

    opts = options_from_args(args)
    progress = PhaseBar(enabled=not args.no_progress)
    try:
        doc = run_suite(opts, progress)
    finally:
        progress.close()
    if args.json:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).expanduser().write_text(text)
    if args.markdown:
        sys.stdout.write(render_markdown(doc))
    elif args.json != "-":
        sys.stdout.write(render_text(doc))
    return 0 if _all_ok(doc) else 1


def _all_ok(doc: dict) -> bool:
    """Exit 1 when a run did not produce the forced number of tokens (figures are off)."""
    if doc.get("results") and not doc["results"]["summary"]["completion_ok"]:
        print("vlmserve bench: warning: some requests stopped before --max-tokens "
              "(the model emitted end-of-turn); tok/s figures use the real counts",
              file=sys.stderr)
    return True

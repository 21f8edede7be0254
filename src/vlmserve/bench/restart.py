"""``vlmserve bench --scenario restart``: what the disk tier of the image cache buys.

Each run: a new picture asked about by a freshly loaded engine whose disk tier
(``--image-cache-dir``, here a temporary folder) is empty (cold: the encoder runs), then
the engine is closed and loaded again over the same folder and asked the same question
about the same picture (a restarted server: the RAM cache and KV are gone, the disk tier
is not). The figure is the second TTFT against the first.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from vlmserve.bench.machine import load_average, run_header
from vlmserve.bench.stall import jpeg_picture
from vlmserve.bench.workload import BenchError, parse_image_size

SCHEMA = "vlmserve-bench-restart/1"
QUESTION = "请用中文描述这张图片"


def run_cli(args: argparse.Namespace) -> int:
    from vlmserve.chat import ChatMessage, ChatRenderer
    from vlmserve.config import EngineConfig
    from vlmserve.engine.factory import create_engine
    from vlmserve.engine.run_to_end import run_to_end
    from vlmserve.images import prepare_image
    from vlmserve.models.registry import resolve_model_paths
    from vlmserve.types import Request, SamplingParams

    if args.url or args.demo:
        raise BenchError("--scenario restart loads the model here: pass --model/--mmproj")
    width, height = parse_image_size(args.image)
    model, mmproj = resolve_model_paths(args.model, args.mmproj)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        **run_header(SCHEMA, shlex.join(["vlmserve", *sys.argv[1:]]), "in-process",
                     scenario="restart"),
        "workload": {"image": [width, height], "runs": args.runs, "max_tokens": 8,
                     "question": QUESTION},
        "model": {"path": str(model), "mmproj_path": str(mmproj)},
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="vlmserve-restart-") as folder:
        config = EngineConfig(model_path=model, mmproj_path=mmproj, n_parallel=1,
                              n_ctx_per_slot=args.ctx_size or 4096, n_threads=args.threads,
                              n_gpu_layers=args.n_gpu_layers, image_cache_dir=Path(folder))
        for run in range(args.runs):
            image = prepare_image(jpeg_picture(width, height, seed=7919 * (run + 1)))
            row = {}
            for phase in ("cold", "restarted"):
                with create_engine(config) as engine:
                    prompt = ChatRenderer.for_model(engine.info.chat_template).render(
                        [ChatMessage.user(QUESTION, image)])
                    done = run_to_end(engine, Request(f"{phase}{run}", prompt, SamplingParams(
                        max_tokens=8, temperature=0.0)))
                if done is None or done.error:
                    raise BenchError(f"the {phase} request failed: {done and done.error}")
                row[f"{phase}_ttft_ms"] = round(done.stats.ttft_ms, 1)
                row[f"{phase}_image_encode_ms"] = round(done.stats.image_encode_ms, 1)
                row[f"{phase}_disk_hits"] = done.stats.image_disk_hits
            row["ratio"] = round(row["restarted_ttft_ms"] / row["cold_ttft_ms"], 3)
            runs.append(row)
            if not args.no_progress:
                print(f"vlmserve bench: run {run + 1}/{args.runs}: {row}", file=sys.stderr)
    doc["results"] = {"runs": runs, "summary": {
        key: median(r[key] for r in runs) for key in ("cold_ttft_ms", "restarted_ttft_ms",
                                                       "ratio")}}
    doc["load_average"]["end"] = load_average()
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(doc, indent=2) + "\n")
    s = doc["results"]["summary"]
    print(f"restart scenario, {width}x{height}, {args.runs} runs (medians): cold TTFT "
          f"{s['cold_ttft_ms']:.1f} ms, restarted TTFT {s['restarted_ttft_ms']:.1f} ms, "
          f"ratio {s['ratio']:.3f}; load {doc['load_average']['start']} -> "
          f"{doc['load_average']['end']}")
    return 0

"""``vlmserve bench --scenario video``: one clip question's cost, end to end.

Each run writes a new synthetic clip (``--clip-seconds`` at 30 fps, ``--image`` frame
size, a moving bar so every frame differs), prepares it as the server would (PyAV
decode, Qwen's 2 fps sampling, resize within the clip's token budget: "prepare ms"),
asks one question on a fresh engine slot (the encoder runs: frames, pairs, vision
tokens, encode ms, prefill ms, TTFT), then a follow-up about the same clip (its KV is
reused: the warm TTFT). Figures are medians over ``--runs``; the load average is
recorded at both ends because the machine may be shared.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import median
from typing import Any

from vlmserve.bench.machine import load_average, run_header
from vlmserve.bench.workload import BenchError, parse_image_size

SCHEMA = "vlmserve-bench-video/1"
QUESTION = "请描述这段视频"
FOLLOW_UP = "最后发生了什么？"
SOURCE_FPS = 30


def synthetic_clip(seconds: float, width: int, height: int, seed: int) -> bytes:
    """An MPEG-4 clip whose every frame differs (a bar moves, the background shifts)."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=SOURCE_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * SOURCE_FPS)):
            a = np.full((height, width, 3), (seed * 37) % 200, np.uint8)
            a[:, :, 1] = (i * 3 + seed * 11) % 256
            x = (i * 5 + seed * 13) % max(1, width - 16)
            a[:, x:x + 16, 0] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def run_cli(args: argparse.Namespace) -> int:
    from vlmserve.bench.suite import demo_model
    from vlmserve.chat import ChatMessage, ChatRenderer
    from vlmserve.config import EngineConfig
    from vlmserve.engine.factory import create_engine
    from vlmserve.engine.run_to_end import run_to_end
    from vlmserve.models.registry import resolve_model_paths
    from vlmserve.types import Request, SamplingParams
    from vlmserve.video import VideoOptions, prepare_clip

    if args.url:
        raise BenchError("--scenario video loads the model here: pass --demo or --model")
    width, height = parse_image_size(args.image)
    seconds = args.clip_seconds
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        **run_header(SCHEMA, shlex.join(["vlmserve", *sys.argv[1:]]), "in-process",
                     scenario="video"),
        "workload": {"clip_seconds": seconds, "source_fps": SOURCE_FPS, "frame": [width, height],
                     "sample_fps": VideoOptions().fps, "video_max_tokens": VideoOptions().max_tokens,
                     "runs": args.runs, "max_tokens": 8, "question": QUESTION},
    }
    runs = []
    with ExitStack() as stack:
        if args.demo:
            demo_dir = Path(args.demo_dir).expanduser() if args.demo_dir else None
            vocab = args.vocab if args.vocab != "auto" else (
                "qwen" if args.demo == "8b-layers" else "demo")
            model, mmproj = stack.enter_context(demo_model(args.demo, demo_dir, vocab))
        else:
            model, mmproj = resolve_model_paths(args.model, args.mmproj)
        doc["model"] = {"path": str(model), "mmproj_path": str(mmproj), "demo_size": args.demo}
        config = EngineConfig(model_path=model, mmproj_path=mmproj, n_parallel=1,
                              n_ctx_per_slot=args.ctx_size or 8192, n_threads=args.threads,
                              n_threads_vision=args.threads_vision,
                              n_gpu_layers=args.n_gpu_layers)
        engine = stack.enter_context(create_engine(config))
        doc["engine"] = {"threads": engine.info.threads,
                         "threads_vision": engine.info.threads_vision}
        renderer = ChatRenderer.for_model(engine.info.chat_template)
        sampling = SamplingParams(max_tokens=8, temperature=0.0)
        for run in range(args.runs):
            data = synthetic_clip(seconds, width, height, seed=run + 1)
            t_prep = time.perf_counter()
            clip = prepare_clip(data)
            prepare_ms = (time.perf_counter() - t_prep) * 1000
            history = [ChatMessage.user(QUESTION, clip)]
            cold = run_to_end(engine, Request(f"v{run}", renderer.render(history), sampling))
            if cold is None or cold.error:
                raise BenchError(f"the clip question failed: {cold and cold.error}")
            history += [ChatMessage.assistant(cold.text), ChatMessage.user(FOLLOW_UP)]
            warm = run_to_end(engine, Request(f"w{run}", renderer.render(history), sampling))
            if warm is None or warm.error:
                raise BenchError(f"the follow-up failed: {warm and warm.error}")
            s = cold.stats
            row = {"frames": clip.source_frames, "pairs": clip.n_pairs,
                   "frame_size": [clip.width, clip.height], "vision_tokens": s.image_tokens,
                   "prompt_tokens": s.prompt_tokens, "prepare_ms": round(prepare_ms, 1),
                   "encode_ms": round(s.image_encode_ms, 1),
                   "prefill_ms": round(s.prefill_ms, 1), "ttft_ms": round(s.ttft_ms, 1),
                   "follow_up_cached_tokens": warm.stats.cached_tokens,
                   "follow_up_ttft_ms": round(warm.stats.ttft_ms, 1)}
            runs.append(row)
            if not args.no_progress:
                print(f"vlmserve bench: run {run + 1}/{args.runs}: {row}", file=sys.stderr)
    keys = ("frames", "pairs", "vision_tokens", "prompt_tokens", "prepare_ms", "encode_ms",
            "prefill_ms", "ttft_ms", "follow_up_cached_tokens", "follow_up_ttft_ms")
    doc["results"] = {"runs": runs, "summary": {k: median(r[k] for r in runs) for k in keys}}
    doc["load_average"]["end"] = load_average()
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(doc, indent=2) + "\n")
    s = doc["results"]["summary"]
    print(f"video scenario, {seconds:g} s clip {width}x{height} at {SOURCE_FPS} fps, "
          f"{args.runs} runs (medians): {s['frames']} frames, {s['pairs']} pairs, "
          f"{s['vision_tokens']} vision tokens ({s['prompt_tokens']} prompt), prepare "
          f"{s['prepare_ms']:.0f} ms, encode {s['encode_ms']:.0f} ms, prefill "
          f"{s['prefill_ms']:.0f} ms, TTFT {s['ttft_ms']:.0f} ms; follow-up TTFT "
          f"{s['follow_up_ttft_ms']:.0f} ms ({s['follow_up_cached_tokens']} cached); load "
          f"{doc['load_average']['start']} -> {doc['load_average']['end']}")
    return 0

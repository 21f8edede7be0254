"""``python -m vlmserve.cluster.bench``: the two measurements of docs/scale-out.md.

1. Throughput: 8 concurrent sessions (one text turn each, forced length, several rounds)
   on 1 engine replica and on 2 (each replica ``--threads 1``, the same slots):
   aggregate completion tok/s = all tokens / wall time of each round, median of rounds.
2. Cache affinity: sessions, each with its own picture, asking follow-up questions,
   once behind the affinity router and once behind Ray Serve's default router (power of
   two choices): prefix hit rate (cached / prompt tokens of the follow-ups) and vision
   encoder runs (the replicas' ``vlmserve_images_encoded``) against pictures.

Every run starts its own local Ray. The JSON document (``--out``) holds the raw figures,
the command line and the load average before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from vlmserve.cluster.deployment import ClusterOptions
from vlmserve.cluster.local import ClusterRun
from vlmserve.settings import ServerSettings


def _settings(model: Path, mmproj: Path, port: int, parallel: int) -> ServerSettings:
    return ServerSettings.load(model=model, mmproj=mmproj, threads=1, parallel=parallel,
                               ctx_size=4096, ui=False, host="127.0.0.1", port=port,
                               log_level="warning")


def _wait_up(url: str, replicas: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/health", timeout=5).json()
            if body.get("replicas", {}).get("up") == replicas and \
                    len(body["replicas"]["posting"]) == replicas:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{replicas} replicas not up after {timeout_s} s")


def _chat(url: str, messages: list, session: str, max_tokens: int) -> dict:
    body = {"model": "m", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "session_id": session}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    return r.json()


def _encoded(url: str) -> int:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("vlmserve_replica_images_encoded_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _rounds(url: str, sessions: int, max_tokens: int, rounds: int) -> list[float]:
    """Aggregate tok/s of each round of ``sessions`` concurrent one-turn sessions."""
    rates = []
    with ThreadPoolExecutor(sessions) as pool:
        for r in range(rounds + 1):  # round 0 warms up
            t0 = time.perf_counter()
            outs = list(pool.map(lambda s, r=r: _chat(
                url, [{"role": "user", "content": f"round {r} session {s}: go on"}],
                f"tp-{r}-{s}", max_tokens), range(sessions)))
            wall = time.perf_counter() - t0
            if r:
                rates.append(sum(o["usage"]["completion_tokens"] for o in outs) / wall)
    return rates


def _figures(label: dict, rates: list[float], sessions: int, max_tokens: int) -> dict:
    return {**label, "sessions": sessions, "max_tokens": max_tokens,
            "tok_s_rounds": [round(x, 1) for x in rates],
            "tok_s_median": round(statistics.median(rates), 1)}


def throughput(model: Path, mmproj: Path, port: int, replicas: int, sessions: int,
               max_tokens: int, rounds: int) -> dict:
    run = ClusterRun(_settings(model, mmproj, port, sessions), ClusterOptions(replicas=replicas))
    try:
        _wait_up(run.url, replicas)
        rates = _rounds(run.url, sessions, max_tokens, rounds)
        return _figures({"replicas": replicas}, rates, sessions, max_tokens)
    finally:
        run.stop()


def single_process(model: Path, mmproj: Path, port: int, sessions: int, max_tokens: int,
                   rounds: int) -> dict:
    """The same rounds against a plain ``vlmserve serve`` (no Ray): the ingress's cost."""
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-m", "vlmserve.cli.main", "serve", "--model", str(model), "--mmproj",
         str(mmproj), "--threads", "1", "--parallel", str(sessions), "--ctx-size", "4096",
         "--no-ui", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        rates = _rounds(url, sessions, max_tokens, rounds)
        return _figures({"replicas": "1, no Ray"}, rates, sessions, max_tokens)
    finally:
        child.terminate()
        child.wait(30)


def _picture(seed: int) -> str:
    import base64
    import io

    from PIL import Image

    img = Image.new("RGB", (384, 384), ((seed * 53) % 256, (seed * 97) % 256, 120))
    for x in range(0, 384, 24):
        img.paste(((x * 3 + seed * 11) % 256, 40, 200), (x, (x * seed) % 360, x + 12, 384))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def cache_affinity(model: Path, mmproj: Path, port: int, router: str, sessions: int,
                   follow_ups: int) -> dict:
    # As many slots as sessions: a replica can keep every conversation it owns, so what
    # is measured is the router, not slot eviction.
    run = ClusterRun(_settings(model, mmproj, port, sessions),
                     ClusterOptions(replicas=2, router=router))
    try:
        _wait_up(run.url, 2)
        prompt = cached = 0
        homes: dict[str, set[str]] = {}
        for turn in range(1 + follow_ups):  # every session asks, then every follow-up
            for s in range(sessions):
                content: list = [{"type": "text", "text": f"question {turn} about it"}]
                if turn == 0:
                    content.insert(0, {"type": "image_url", "image_url": {"url": _picture(s)}})
                out = _chat(run.url, [{"role": "user", "content": content}], f"aff-{s}", 8)
                homes.setdefault(f"aff-{s}", set()).add(out["x_vlmserve"]["replica"])
                if turn:
                    prompt += out["usage"]["prompt_tokens"]
                    cached += out["usage"]["prompt_tokens_details"]["cached_tokens"]
        return {"router": router, "sessions": sessions, "follow_ups": follow_ups,
                "pictures": sessions, "encoder_runs": _encoded(run.url),
                "follow_up_prefix_hit_rate": round(cached / prompt, 3),
                "replicas_per_session_mean": round(statistics.mean(
                    len(v) for v in homes.values()), 2)}
    finally:
        run.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlmserve.cluster.bench", description=__doc__)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--mmproj", type=Path, required=True)
    p.add_argument("--port", type=int, default=7871)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--follow-ups", type=int, default=3)
    p.add_argument("--only", choices=("throughput", "affinity"), default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    doc = {"command": " ".join(["python -m vlmserve.cluster.bench", *(argv or sys.argv[1:])]),
           "model": str(args.model), "threads_per_replica": 1,
           "load_average_before": os.getloadavg(), "throughput": [], "affinity": []}
    if args.only != "affinity":
        doc["throughput"].append(single_process(args.model, args.mmproj, args.port,
                                                args.sessions, args.max_tokens, args.rounds))
        print(json.dumps(doc["throughput"][-1]), file=sys.stderr, flush=True)
    for replicas in (1, 2) if args.only != "affinity" else ():
        doc["throughput"].append(throughput(args.model, args.mmproj, args.port, replicas,
                                            args.sessions, args.max_tokens, args.rounds))
        print(json.dumps(doc["throughput"][-1]), file=sys.stderr, flush=True)
    for router in ("affinity", "pow2") if args.only != "throughput" else ():
        doc["affinity"].append(cache_affinity(args.model, args.mmproj, args.port, router,
                                              args.sessions, args.follow_ups))
        print(json.dumps(doc["affinity"][-1]), file=sys.stderr, flush=True)
    doc["load_average_after"] = os.getloadavg()
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

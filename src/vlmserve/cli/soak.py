"""``vlmserve soak``: a bounded, seeded load and soak run against a loopback server.

Examples::

    vlmserve soak --demo --duration 600 --clients 64 --seed 1
    vlmserve soak --url http://127.0.0.1:7860 --duration 60 --clients 16 --json soak.json

With ``--demo`` (or ``--model``) it starts ``vlmserve serve`` itself (SIGTERM at the end,
its exit code is reported); with ``--url`` it loads a server already running on this
machine. See ``vlmserve.bench.soak`` for what the clients do.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soak", help="a bounded load and soak run (loopback servers only)",
        description="Many seeded clients mixing streamed and plain answers, new and "
        "repeated pictures, sessions and early disconnects, for --duration seconds or "
        "--max-requests requests; reports requests by outcome, TTFT p50/p99, slots and "
        "queue after, and the server's RSS over time.")
    g = p.add_argument_group("server (one of)")
    g.add_argument("--url", help="a running server on this machine (http://127.0.0.1:PORT)")
    g.add_argument("--demo", action="store_true",
                   help="start a server on the tiny random-weight demo model")
    g.add_argument("--model", help="start a server on this text GGUF (with --mmproj)")
    g.add_argument("--mmproj", help="its vision projector GGUF")
    g.add_argument("--server-args", default="--parallel 4 --threads 1",
                   help="flags for the server it starts (default: %(default)s)")
    r = p.add_argument_group("run")
    r.add_argument("--clients", type=int, default=64)
    r.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    r.add_argument("--max-requests", type=int, default=100_000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--sample-every", type=float, default=10.0,
                   help="seconds between RSS samples (default 10)")
    r.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmserve.bench.soak import Soak, SoakConfig, check_loopback, dump, format_summary, summary
    from vlmserve.bench.soak_server import SoakServer
    from vlmserve.bench.workload import BenchError

    chosen = sum(bool(x) for x in (args.url, args.demo, args.model))
    if chosen != 1:
        raise BenchError("give one of --url, --demo or --model")
    if args.url:
        check_loopback(args.url)
    server = None
    with tempfile.TemporaryDirectory(prefix="vlmserve-soak-") as tmp:
        if not args.url:
            if args.demo:
                from vlmserve.models.demo import write_demo_model

                files = write_demo_model(Path(tmp), size="tiny")
                model, mmproj = files.model, files.mmproj
            else:
                if not args.mmproj:
                    raise BenchError("--model needs --mmproj")
                model, mmproj = Path(args.model), Path(args.mmproj)
            server = SoakServer(model, mmproj, shlex.split(args.server_args)).wait_ready()
        url = args.url or server.url
        try:
            config = SoakConfig(url, args.clients, args.duration, args.max_requests, args.seed,
                                args.sample_every)
            figures = summary(asyncio.run(Soak(config).run()))
        finally:
            if server is not None:
                rc = server.stop()
                log = server.log_text()
        if server is not None:
            figures["server_exit_code"] = rc
            figures["server_tracebacks"] = log.count("Traceback")
    print(format_summary(figures))
    if server is not None:
        print(f"server: exit code {figures['server_exit_code']}, "
              f"{figures['server_tracebacks']} tracebacks in its log")
    if args.json:
        Path(args.json).write_text(dump(figures))
    return 0 if server is None or figures["server_exit_code"] == 0 else 1

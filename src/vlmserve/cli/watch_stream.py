"""``vlmserve watch --stream URL ...``: the stream half of ``watch`` (flags and run)."""

from __future__ import annotations

import argparse
import sys

from vlmserve.batch.signals import StopFlag
from vlmserve.batch.task import Task
from vlmserve.errors import VlmserveError


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_stream_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("camera streams (instead of DIR)")
    g.add_argument("--stream", action="append", default=[], metavar="URL",
                   help="rtsp://, http(s):// MJPEG or HLS, a device (/dev/video0) or a video "
                   "file played in real time; repeat for several cameras (one engine)")
    g.add_argument("--every", type=positive_float, default=2.0, metavar="S",
                   help="describe one frame every S seconds of each stream (default 2)")
    g.add_argument("--dup-distance", type=int, default=4, metavar="BITS",
                   help="skip a frame whose perceptual hash is within BITS of the last "
                   "described one (default 4 of 64; -1 describes every frame)")
    g.add_argument("--alert", metavar="FIELD", default=None,
                   help="a boolean field of the --json-schema answer: true raises an alert "
                   "(logged, and POSTed to --webhook)")
    g.add_argument("--webhook", metavar="URL", default=None,
                   help="POST each alert as JSON to URL (retried with backoff)")
    g.add_argument("--webhook-tries", type=int, default=5, metavar="N",
                   help="tries per alert (default 5; waits 0.5, 1, 2, 4 s between)")


def check_alert(task: Task, field: str | None, webhook: str | None) -> None:
    """``--alert`` needs a schema whose ``field`` is a boolean; ``--webhook`` needs ``--alert``."""
    if webhook is not None and field is None:
        raise VlmserveError("--webhook needs --alert FIELD (which answers raise an alert)")
    if webhook is not None and not webhook.lower().startswith(("http://", "https://")):
        raise VlmserveError(f"--webhook must be an http(s) URL, got {webhook!r}")
    if field is None:
        return
    if task.structured is None:
        raise VlmserveError("--alert needs --json-schema (or a template with a schema): the "
                            "alert field is read from the JSON answer")
    prop = task.structured.schema.get("properties", {}).get(field)
    if not isinstance(prop, dict) or prop.get("type") != "boolean":
        raise VlmserveError(f"--alert {field}: the schema has no boolean property {field!r}")


def run_streams(args: argparse.Namespace, task: Task, options) -> int:
    from vlmserve.batch.stream_watch import StreamJob, watch_streams
    from vlmserve.cli.engine_args import engine_config_from_args
    from vlmserve.engine.factory import create_engine
    from vlmserve.video.streams import check_source

    check_alert(task, args.alert, args.webhook)
    if args.webhook_tries < 1:
        raise VlmserveError("--webhook-tries must be >= 1")
    if not -1 <= args.dup_distance <= 64:
        raise VlmserveError("--dup-distance must be in [-1, 64]")
    for source in args.stream:
        check_source(source)
    parallel = max(args.parallel, len(args.stream))
    job = StreamJob(task, options, args.every, args.alert, args.dup_distance, parallel)

    def say(line: str) -> None:
        print(f"vlmserve: {line}", file=sys.stderr, flush=True)

    with StopFlag() as flag:
        with create_engine(engine_config_from_args(args, n_parallel=parallel)) as engine:
            if flag.set:
                return 0
            say(f"watching {len(args.stream)} stream(s), a frame every {args.every:g} s, "
                f"results in {args.output}; Ctrl-C to stop")
            outcome = watch_streams(engine, job, args.stream, args.output, flag, args.webhook,
                                    args.webhook_tries, say=say)
    c = outcome.counts.values()
    summary = (f"{outcome.written} lines written to {args.output}: "
               f"{sum(x.described for x in c)} frames described, "
               f"{sum(x.duplicates for x in c)} near-duplicates skipped, "
               f"{sum(x.busy for x in c)} dropped while busy, {sum(x.errors for x in c)} errors, "
               f"{sum(x.alerts for x in c)} alerts ({outcome.alerts_sent} delivered, "
               f"{outcome.alerts_failed} failed), {outcome.reconnects} reopens")
    if outcome.write_error:
        say(f"error: {outcome.write_error}; {summary}")
        return 1
    say(f"watch stopped: {summary}")
    return 1 if outcome.errors and not flag.set else 0

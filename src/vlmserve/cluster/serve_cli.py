"""``vlmserve serve --ray``: run the application on Ray Serve until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import sys
import time

from vlmserve.batch.signals import StopFlag
from vlmserve.cluster.deployment import ClusterOptions, parse_autoscale
from vlmserve.cluster.local import ClusterRun
from vlmserve.engine.preflight import preflight
from vlmserve.settings import ServerSettings


def options_from_args(settings: ServerSettings, args: argparse.Namespace) -> ClusterOptions:
    return ClusterOptions(
        replicas=args.replicas if args.replicas is not None else 2,
        autoscale=parse_autoscale(args.autoscale) if args.autoscale else None,
        replica_cpus=float(settings.threads or 1),
        replica_gpus=args.replica_gpus or 0.0,
        router=args.router or "affinity")


def serve_on_ray(settings: ServerSettings, args: argparse.Namespace) -> int:
    options = options_from_args(settings, args)  # bad flags fail before Ray starts
    if not args.ray_address:
        # A local Ray runs the replicas here: refuse a broken model file or one that does
        # not fit now, as plain `serve` does, rather than after Serve's start retries.
        preflight(settings.to_engine_config(), gpu_offload=options.replica_gpus > 0)
    with StopFlag() as flag:
        run = ClusterRun(settings, options, address=args.ray_address)
        try:
            scale = (f"{options.autoscale[0]}-{options.autoscale[1]} (autoscaled)"
                     if options.autoscale else str(options.replicas))
            print(f"vlmserve: model {settings.model}\nvlmserve: Ray Serve, {scale} engine "
                  f"replicas, {options.router} router\nvlmserve: API   {run.url}/v1  (health "
                  f"{run.url}/health)", file=sys.stderr, flush=True)
            while not flag.set:
                time.sleep(0.2)
        finally:
            run.stop()
    return 0

"""``vlmserve serve``: the web page and the OpenAI-compatible API on one port.

Flags override ``VLMSERVE_*`` variables, which override the defaults (see
``vlmserve.settings``). Ctrl-C or SIGTERM stops the server cleanly: new requests get
503, queued ones end at once, running ones get ``--shutdown-timeout`` seconds, the engine
thread stops, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from vlmserve.cli.settings_flags import add_setting_flags, given_settings
from vlmserve.errors import ModelLoadError, VlmserveError
from vlmserve.models.registry import resolve_model_paths
from vlmserve.settings import ServerSettings

_LOOPBACK = ("127.0.0.1", "localhost", "::1")

log = logging.getLogger("vlmserve.serve")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the web page and the OpenAI-compatible API",
        description="Serve the image Q&A page on / and the OpenAI-compatible API on /v1 "
        "(one process, one port). Every flag can also be set as VLMSERVE_<NAME>, "
        "e.g. VLMSERVE_MODEL, VLMSERVE_PORT, VLMSERVE_API_KEY.")
    add_setting_flags(p)  # every setting of the table, default None: env stays in charge
    add_ray_flags(p)
    p.set_defaults(func=run)


def add_ray_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray Serve (needs the vlmserve[ray] extra; docs/scale-out.md)")
    g.add_argument("--ray", action="store_true",
                   help="serve from a Ray Serve ingress in front of several engine replicas, "
                   "each a full engine, with cache-affine routing (a local Ray is started "
                   "unless --ray-address is given)")
    g.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="engine replicas (default 2)")
    g.add_argument("--autoscale", default=None, metavar="MIN:MAX",
                   help="let Ray Serve scale the engine replicas between MIN and MAX")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    g.add_argument("--replica-gpus", type=float, default=None, metavar="G",
                   help="GPUs per engine replica (CUDA builds; default 0)")
    g.add_argument("--router", default=None, choices=("affinity", "pow2"),
                   help="request router: affinity (default) or Ray Serve's power of two "
                   "choices (for comparison)")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Settings with the flags on top of the environment, and the model files resolved."""
    settings = ServerSettings.load(**given_settings(args))
    model, mmproj = resolve_model_paths(
        str(settings.model) if settings.model else None,
        str(settings.mmproj) if settings.mmproj else None)
    for label, path in (("model", model), ("mmproj", mmproj)):
        if not path.is_file():
            raise ModelLoadError(f"{label} file not found: {path}")
    return settings.model_copy(update={"model": model, "mmproj": mmproj})


def run(args: argparse.Namespace) -> int:
    ray_flags = [f"--{n.replace('_', '-')}" for n in ("replicas", "autoscale", "ray_address",
                                                     "replica_gpus", "router")
                 if getattr(args, n, None) is not None]
    if ray_flags and not args.ray:
        raise VlmserveError(f"{', '.join(ray_flags)} need --ray")
    settings = settings_from_args(args)
    if args.ray:
        try:
            from vlmserve.cluster.serve_cli import serve_on_ray
        except ImportError as exc:
            raise VlmserveError(f"--ray needs Ray: pip install 'vlmserve[ray]' ({exc})") from None
        return serve_on_ray(settings, args)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(levelname)s:     %(name)s: %(message)s")
    import uvicorn  # here, so `vlmserve --help` stays fast

    from vlmserve.http.app import create_app
    from vlmserve.http.connection_guard import guarded_protocol

    failures: list[VlmserveError] = []
    server: uvicorn.Server | None = None

    def on_load_error(error: VlmserveError) -> None:
        failures.append(error)
        if server is not None:
            server.should_exit = True  # nothing to serve: stop, and exit 1 below

    app = create_app(settings, on_load_error=on_load_error)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list | None = None) -> None:
            # Before uvicorn closes its sockets and waits for open connections: refuse new
            # requests (503), end queued ones, let running ones finish within
            # --shutdown-timeout and end the rest, each stream with an error event and
            # [DONE], so nothing is left for uvicorn to cut off mid-stream.
            await app.state.services.shutdown.run()
            await super().shutdown(sockets)

    server = Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=5, lifespan="on",
        http=guarded_protocol(settings.header_timeout, settings.max_connections),
        timeout_keep_alive=settings.idle_timeout,
        ssl_certfile=_path(settings.ssl_certfile), ssl_keyfile=_path(settings.ssl_keyfile)))
    _print_banner(settings)

    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown), then re-raises the signal
    # to the handlers that were installed before it ran. Python's defaults would turn
    # that into a KeyboardInterrupt or a kill; a requested shutdown is a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()
    if failures:
        raise failures[0]
    return 0


def _path(path: Path | None) -> str | None:
    return str(path.expanduser()) if path is not None else None


def _print_banner(settings: ServerSettings) -> None:
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"{'https' if settings.tls else 'http'}://{shown_host}:{settings.port}"
    lines = [f"vlmserve: model {settings.model}"]
    if settings.ui:
        lines.append(f"vlmserve: page  {url}/")
    lines.append(f"vlmserve: API   {url}/v1  (OpenAI-compatible; health {url}/health)")
    if settings.host not in _LOOPBACK:
        lines.append(f"vlmserve: WARNING: listening on {settings.host}, reachable from "
                     "other machines" + ("." if settings.api_key_value else
                                         " with NO API key: set --api-key (or "
                                         "VLMSERVE_API_KEY)."))
        if not settings.api_key_value:
            log.warning("the %s is reachable from the network on %s without a key: anyone "
                        "there can use it; set --api-key (the page's password)",
                        "page and the API" if settings.ui else "API", settings.host)
        if settings.ui and not settings.tls:
            lines.append("vlmserve: phones open the camera only over HTTPS: see README "
                         "(vlmserve cert, --ssl-certfile / --ssl-keyfile)")
    if settings.demo:
        bar = "!" * 78
        lines += [bar, "!!  DEMO MODEL: random weights, answers are gibberish.",
                  "!!  Get the real model: vlmserve pull  (see README)", bar]
    print("\n".join(lines), file=sys.stderr, flush=True)

"""``vlmserve serve``: the web page and the OpenAI-compatible API on one port.

Flags override ``VLMSERVE_*`` variables, which override the defaults (see
``vlmserve.settings``). Ctrl-C or SIGTERM stops the server cleanly: open requests get a
few seconds, the engine thread stops, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from vlmserve.cli.engine_args import resolve_model_paths
from vlmserve.errors import ModelLoadError, VlmserveError
from vlmserve.settings import ServerSettings

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the web page and the OpenAI-compatible API",
        description="Serve the image Q&A page on / and the OpenAI-compatible API on /v1 "
        "(one process, one port). Every flag can also be set as VLMSERVE_<NAME>, "
        "e.g. VLMSERVE_MODEL, VLMSERVE_PORT, VLMSERVE_API_KEY.")
    g = p.add_argument_group("model")
    g.add_argument("--model", type=Path, help="Qwen3-VL text GGUF, model folder or name from "
                   "`vlmserve models` (default: the default model there)")
    g.add_argument("--mmproj", type=Path, help="vision projector GGUF (default: the "
                   "mmproj*.gguf next to the model)")
    _flag(g, "--demo", "the model is the random-weight demo model: show a warning banner")
    g = p.add_argument_group("network")
    g.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for remote "
                   "access, then set --api-key)")
    g.add_argument("--port", type=int, help="port (default 7860)")
    g.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 and "
                   "/metrics; the page asks for it as password")
    _flag(g, "--no-ui", "serve the API only, no page on /", dest="ui", value=False)
    g.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    g = p.add_argument_group("engine")
    g.add_argument("--parallel", type=int, help="requests decoded together (default 4)")
    g.add_argument("--ctx-size", type=int, help="context tokens per parallel slot "
                   "(default 8192)")
    g.add_argument("--threads", type=int, help="CPU threads (default: a sensible share)")
    g.add_argument("--threads-vision", type=int, help="vision-encoder threads (default: the "
                   "cores the text model leaves, 1 on 2 cores)")
    g.add_argument("--batch-size", type=int, help="most tokens per decode step (default 512)")
    g.add_argument("--n-gpu-layers", type=int, help="layers to offload (default -1: all)")
    g.add_argument("--flash-attn", choices=["auto", "on", "off"],
                   help="text-model flash attention (default auto: on with a GPU, off on CPU)")
    g.add_argument("--image-cache-mb", type=int, help="vision-embedding cache (default 512)")
    g.add_argument("--image-cache-dir", type=Path, help="keep vision embeddings on disk here "
                   "too, so a restarted server skips the encoder for known pictures")
    g.add_argument("--image-cache-disk-mb", type=int, help="disk cache budget (default 4096)")
    g.add_argument("--image-slice", type=int, help="most image KV cells per engine step "
                   "(default 64): smaller keeps other answers smoother")
    g.add_argument("--max-queue", type=int, help="waiting requests before 503 (default 64)")
    g = p.add_argument_group("requests")
    g.add_argument("--context-budget", type=int, help="sliding-window token budget of a "
                   "conversation, reply included (default 4096)")
    g.add_argument("--max-tokens", type=int, help="reply length when a request sets none "
                   "(default 512)")
    _flag(g, "--allow-remote-images", "let requests give http(s) image URLs to fetch")
    g.add_argument("--image-max-edge", type=int, help="resize images to this longest edge "
                   "(default 1024)")
    g.add_argument("--image-max-mb", type=float, help="largest image file (default 20)")
    g.add_argument("--image-max-tokens", type=int,
                   help="cap on vision tokens per image: trade detail for speed (default: "
                   "the model's, 4096 for Qwen3-VL)")
    g.add_argument("--image-min-tokens", type=int, help="floor on vision tokens per image")
    g.add_argument("--session-ttl-s", type=float, help="idle seconds before a server-side "
                   "session is forgotten (default 3600)")
    g.add_argument("--max-sessions", type=int, help="server-side sessions kept (default 1000; "
                   "the least recently used goes first)")
    g.add_argument("--templates-file", type=Path, help="YAML/JSON file of extra prompt "
                   "templates")
    p.set_defaults(func=run)


def _flag(group: argparse._ArgumentGroup, name: str, help: str, dest: str | None = None,
          value: bool = True) -> None:
    # default None, not False: a flag that was not given must not override VLMSERVE_*.
    group.add_argument(name, action="store_const", const=value, default=None, help=help,
                       **({"dest": dest} if dest else {}))


_SETTINGS_FLAGS = (
    "model", "mmproj", "demo", "host", "port", "api_key", "ui", "log_level", "parallel",
    "ctx_size", "threads", "threads_vision", "batch_size", "n_gpu_layers", "flash_attn", "image_cache_mb", "max_queue",
    "image_cache_dir", "image_cache_disk_mb", "image_slice",
    "context_budget", "max_tokens", "allow_remote_images", "image_max_edge", "image_max_mb",
    "image_min_tokens", "image_max_tokens",
    "session_ttl_s", "max_sessions", "templates_file",
)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Settings with the flags on top of the environment, and the model files resolved."""
    settings = ServerSettings.load(**{k: getattr(args, k, None) for k in _SETTINGS_FLAGS})
    model, mmproj = resolve_model_paths(
        str(settings.model) if settings.model else None,
        str(settings.mmproj) if settings.mmproj else None)
    for label, path in (("model", model), ("mmproj", mmproj)):
        if not path.is_file():
            raise ModelLoadError(f"{label} file not found: {path}")
    return settings.model_copy(update={"model": model, "mmproj": mmproj})


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(levelname)s:     %(name)s: %(message)s")
    import uvicorn  # here, so `vlmserve --help` stays fast

    from vlmserve.http.app import create_app

    failures: list[VlmserveError] = []
    server: uvicorn.Server | None = None

    def on_load_error(error: VlmserveError) -> None:
        failures.append(error)
        if server is not None:
            server.should_exit = True  # nothing to serve: stop, and exit 1 below

    app = create_app(settings, on_load_error=on_load_error)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list | None = None) -> None:
            # Before uvicorn waits for open connections: end running answers now, with a
            # "shutting down" event, rather than let them run out the grace period and be
            # cut off mid-stream.
            app.state.services.begin_shutdown()
            await super().shutdown(sockets)

    server = Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=5, lifespan="on"))
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


def _print_banner(settings: ServerSettings) -> None:
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{shown_host}:{settings.port}"
    lines = [f"vlmserve: model {settings.model}"]
    if settings.ui:
        lines.append(f"vlmserve: page  {url}/")
    lines.append(f"vlmserve: API   {url}/v1  (OpenAI-compatible; health {url}/health)")
    if settings.host not in _LOOPBACK:
        lines.append(f"vlmserve: WARNING: listening on {settings.host}, reachable from "
                     "other machines" + ("." if settings.api_key_value else
                                         " with NO API key: set --api-key (or "
                                         "VLMSERVE_API_KEY)."))
    if settings.demo:
        bar = "!" * 78
        lines += [bar, "!!  DEMO MODEL: random weights, answers are gibberish.",
                  "!!  Get the real model: vlmserve pull  (see README)", bar]
    print("\n".join(lines), file=sys.stderr, flush=True)

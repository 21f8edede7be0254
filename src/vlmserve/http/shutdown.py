"""A clean stop for the HTTP server: stop admitting, drain, end the rest the same way.

On SIGTERM the server (``cli/serve.py``) calls ``Shutdown.run`` before uvicorn closes its
sockets. From then on ``ShutdownGate`` answers every new request 503 with a JSON body;
the engine refuses new work and ends each queued request with ``ShuttingDownError``;
running requests get ``timeout_s`` seconds to finish and are then ended with the same
error. Every stream so ends with an error event (or its finish) and ``data: [DONE]``,
and nothing is left for uvicorn to cancel (which is what logged tracebacks before).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from vlmserve.errors import ShuttingDownError
from vlmserve.http.engine_holder import EngineHolder
from vlmserve.http.errors import error_body

log = logging.getLogger(__name__)

_POLL_S = 0.05
# After the engine ended the last running request, how long its stream may take to
# reach the client (error event, [DONE]) before uvicorn's own grace period takes over.
_END_WAIT_S = 2.0


class Shutdown:
    """The app's shutdown state and the drain; one per app."""

    def __init__(self, holder: EngineHolder, timeout_s: float) -> None:
        self._holder = holder
        self.timeout_s = timeout_s
        self.active = False

    async def run(self) -> None:
        """Stop admitting, let running requests finish within ``timeout_s``, end the rest."""
        if self.active:
            return
        self.active = True
        model = self._holder.model
        if model is None:  # still loading or failed: nothing to drain
            return
        engine = model.engine
        engine.drain()
        log.info("shutting down: waiting up to %g s for running requests", self.timeout_s)
        if not await _until_idle(engine, self.timeout_s):
            log.warning("shutting down: requests still running after %g s are ended",
                        self.timeout_s)
            engine.end_running()
            await _until_idle(engine, _END_WAIT_S)


async def _until_idle(engine: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not engine.idle:  # type: ignore[attr-defined]
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


class ShutdownGate:
    """ASGI middleware: once shutdown began, every new HTTP request gets 503 JSON."""

    def __init__(self, app: ASGIApp, shutdown: Shutdown) -> None:
        self.app = app
        self.shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.shutdown.active:
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_body(503, ShuttingDownError.MESSAGE, ShuttingDownError.code)).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), (b"retry-after", b"5")]})
        await send({"type": "http.response.body", "body": body})

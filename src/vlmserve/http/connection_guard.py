"""Connection timeouts and a connection limit, on uvicorn's h11 protocol.

uvicorn closes a keep-alive connection only after a response, and has no header timeout:
a client that connects and says nothing, or sends its headers a byte at a time
(slowloris), holds a connection for ever. ``guarded_protocol`` makes an ``H11Protocol``
subclass that adds, per connection:

- idle timeout: a connection with no request in progress (just opened, or between
  keep-alive requests) is closed after ``idle_timeout_s`` (uvicorn's keep-alive timer,
  armed from the start too);
- header timeout: from the first byte of a request to its complete head, at most
  ``header_timeout_s``, else the connection is closed;
- connection limit: past ``max_connections`` open connections, a new one is answered
  503 with a JSON body and closed, while the others go on being served.

The body has its own deadline (``BodyTimeout``, ASGI middleware: the app reads the body).
"""

from __future__ import annotations

import asyncio
import json

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from vlmserve.http.errors import error_body

OVERLOADED = "too many open connections to this server; retry shortly"


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps(error_body(503, OVERLOADED, "too_many_connections")).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """An ``H11Protocol`` class with the idle and header timeouts and the connection limit
    (uvicorn's ``timeout_keep_alive`` is the idle timeout); pass it as ``http=``."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > max_connections:
                self.app = _overloaded  # answer its request 503 and close
            # Idle from the start: uvicorn arms this only after a first response.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            waiting_for_head = self.conn.their_state is h11.IDLE and bool(
                self.conn.trailing_data[0])
            if waiting_for_head and self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)
            elif not waiting_for_head:
                self._cancel_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no request to answer yet: just close

    return GuardedH11Protocol


class _BodyTimedOut(HTTPException):
    """Raised by the timed ``receive``: routes turn it into a 408 JSON answer."""


class BodyTimeout:
    """ASGI middleware: the whole request body must arrive within ``timeout_s`` of the
    request's head, else 408 (JSON) and the connection is closed.

    Only reading the body is timed: once it is complete, ``receive`` is passed through
    untouched (streamed answers wait on it to notice a client that leaves).
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                complete = True
                raise _BodyTimedOut(408, f"the request body did not arrive within "
                                    f"{self.timeout_s:g} s", headers={"connection": "close"}
                                    ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except _BodyTimedOut as exc:  # raised outside a route (another middleware read)
            if started:
                return
            body = json.dumps(error_body(408, exc.detail, "request_timeout")).encode()
            await send({"type": "http.response.start", "status": 408,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})

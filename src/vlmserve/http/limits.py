"""Request-body size limit for the API, as plain ASGI middleware.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: the latter runs the app in a
separate task, which breaks client-disconnect handling of streamed responses.

A body over the limit is answered 413 *after* reading (and discarding) what the client
sends, up to a cap: a server that answers and closes while the client is still writing
makes most HTTP clients report a broken connection instead of the 413.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmserve.http.errors import RequestTooLargeError, error_body

# Beyond this many bytes a too-large body is no longer drained: the connection is cut.
_DRAIN_CAP = 64 * 1024 * 1024


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` on paths under ``prefix`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, prefix: str = "/v1/") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(receive, send, declared)
            return

        received = 0

        async def limited_receive() -> Message:
            # Chunked bodies declare no length: count as they arrive.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLargeError(self._message(None))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, declared: int | None) -> str:
        size = f" ({declared / 1e6:.1f} MB)" if declared else ""
        return (f"request body{size} is over the limit of {self.max_bytes / 1e6:.1f} MB; "
                "send a smaller image (it is resized to the model's size anyway)")

    async def _refuse(self, receive: Receive, send: Send, declared: int) -> None:
        if declared <= _DRAIN_CAP:
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                more = message.get("more_body", False)
        body = json.dumps(error_body(413, self._message(declared), RequestTooLargeError.code))
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body.encode()})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""Server-sent events that always clean up after themselves.

Starlette stops iterating a streamed body when the client disconnects, but does not
close the body's async generator: its ``finally`` would run only when garbage collection
gets to it. For a generation that ``finally`` is what aborts the engine request and
frees the slot, so ``ClosingStreamingResponse`` closes the body and runs an ``on_close``
callback itself, shielded from the cancellation that a disconnect delivers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

from vlmserve.errors import VlmserveError
from vlmserve.http.errors import error_body

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


def sse_event(data: str | dict[str, Any]) -> str:
    """One ``data:`` event (a dict is written as compact JSON, non-ASCII kept)."""
    if not isinstance(data, str):
        data = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


async def error_events(error: VlmserveError) -> AsyncIterator[str]:
    """A stream that holds only ``error`` (as an event) and ``data: [DONE]``."""
    yield sse_event(error_body(error.http_status, error.message, error.code))
    yield sse_event("[DONE]")


class ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that closes its body iterator and calls ``on_close``
    however the stream ends: finished, failed, or cut off by the client."""

    def __init__(self, content: AsyncIterator[str],
                 on_close: Callable[[], Awaitable[None]] | None = None, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self._on_close is not None:
                    await self._on_close()

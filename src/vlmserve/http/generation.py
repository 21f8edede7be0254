"""One engine request as the HTTP layer and the page run it.

``Generation.start()`` submits the request and waits for its first delta, so that
everything that can go wrong before the first token (queue full, a prompt the engine
refuses) becomes a proper HTTP status instead of an error in the middle of a 200 stream.
``close()`` aborts the request if it has not finished: call it when the client goes
away, and the engine frees the slot at its next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from vlmserve.engine.client import EngineClient
from vlmserve.errors import EngineError, VlmserveError
from vlmserve.http.errors import RequestAbortedError
from vlmserve.http.metrics import Metrics
from vlmserve.types import FinishReason, Request, TokenDelta, TokenLogprob

Receive = Callable[[], Awaitable[dict]]


def error_for(delta: TokenDelta, abort_reason: str | None = None) -> VlmserveError:
    """The error to report for a delta that ended its request with ABORT or ERROR.

    The engine hands over the ``VlmserveError`` behind it, which says whose fault it
    was: a refused request (empty prompt, prompt too long for a slot, a grammar that does
    not parse) is the client's, 400; llama.cpp failing is 500. An ABORT is the server
    stopping the request (shutting down), whatever the engine's reason.
    """
    if delta.finish_reason is FinishReason.ABORT:
        message = delta.error.message if delta.error is not None else None
        return RequestAbortedError(message or abort_reason or "the request was stopped")
    return delta.error if delta.error is not None else EngineError("the request was stopped")


class ClientGone(Exception):
    """The client disconnected before the first token; its request was aborted."""


class Generation:
    """Submit, stream and (if left early) abort one request; records its metrics."""

    def __init__(self, engine: EngineClient, request: Request, metrics: Metrics,
                 source: str, dropped_turns: int = 0) -> None:
        self.request = request
        self._engine = engine
        self._metrics = metrics
        self._source = source
        self._dropped_turns = dropped_turns
        self._iter: AsyncIterator[TokenDelta] | None = None
        self._first: TokenDelta | None = None
        self.final: TokenDelta | None = None  # the last delta, once the request ended
        self.logprobs: list[TokenLogprob] = []  # every delta's, when the request asked

    @property
    def error(self) -> VlmserveError | None:
        """The error to report, once the request ended with ABORT or ERROR."""
        if self.final is None or self.final.finish_reason in (FinishReason.STOP,
                                                              FinishReason.LENGTH):
            return None
        return error_for(self.final)

    async def start(self, receive: Receive | None = None) -> None:
        """Submit and wait for the first delta.

        Raises ``QueueFullError`` (503) when the engine's queue is full, and the error of
        ``error_for`` when the request ends with an error before producing anything.
        With ``receive`` (the ASGI request's), a client that disconnects while the request
        is still queued raises ``ClientGone`` and the request is aborted at once: without
        this it kept its queue place until it reached a slot and its first token.
        """
        iterator = self._engine.generate(self.request)
        first = asyncio.ensure_future(anext(iterator))  # QueueFullError: nothing submitted
        try:
            if receive is not None:
                gone = asyncio.ensure_future(_disconnected(receive))
                try:
                    await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    gone.cancel()
                    await asyncio.gather(gone, return_exceptions=True)
                if not first.done():
                    raise ClientGone()
            self._first = await first
        except (asyncio.CancelledError, ClientGone):  # the client left before the first token
            first.cancel()  # inside the engine's stream: its ``finally`` aborts the request
            await asyncio.gather(first, return_exceptions=True)
            self._metrics.observe_client_abort(self._source)
            raise
        self._iter = iterator
        if self._first.finished:
            self._record(self._first)
            if self.error is not None:
                raise self.error

    async def deltas(self) -> AsyncIterator[TokenDelta]:
        """The deltas, the first one included; the last has ``finish_reason`` set."""
        if self._first is None or self._iter is None:
            raise RuntimeError("start() first")
        first, self._first = self._first, None
        self.logprobs.extend(first.logprobs)
        yield first
        if first.finished:
            return
        async for delta in self._iter:
            self.logprobs.extend(delta.logprobs)
            if delta.finished:
                self._record(delta)
            yield delta

    async def close(self) -> None:
        """Abort the request if it is still running (idempotent)."""
        if self._iter is None:
            return
        iterator, self._iter = self._iter, None
        if self.final is None:
            self._metrics.observe_client_abort(self._source)
        # Closing the engine's iterator before its last delta tells the engine to abort.
        await iterator.aclose()  # type: ignore[attr-defined]

    def _record(self, delta: TokenDelta) -> None:
        self.final = delta
        self._metrics.observe_finished(self._source, delta.finish_reason or FinishReason.ERROR,
                                       delta.stats, self._dropped_turns)


async def collect_text(generation: Generation, request: object) -> str | None:
    """Start ``generation``, run it to its end and return its text, for answers given as one
    body; ``None`` when the client disconnected first (the request is aborted then).

    ``request`` is the Starlette request (its ``receive`` tells of the disconnect). The
    generation is closed on the way out; read ``generation.final`` / ``.error`` after.
    """
    receive: Receive = request.receive  # type: ignore[attr-defined]
    try:
        try:
            await generation.start(receive)
        except ClientGone:
            return None
        collect = asyncio.ensure_future(_collect(generation))
        gone = asyncio.ensure_future(_disconnected(receive))
        done, _ = await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if collect not in done:  # nobody is left to answer: stop generating
            collect.cancel()
            # Let it unwind before close(): the engine's iterator is busy inside that task
            # until the cancellation reaches it (which is also what aborts the request).
            await asyncio.gather(collect, return_exceptions=True)
            return None
        return collect.result()
    finally:
        await generation.close()


async def _collect(generation: Generation) -> str:
    parts = [delta.text async for delta in generation.deltas()]
    return "".join(parts)


async def _disconnected(receive: Receive) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass

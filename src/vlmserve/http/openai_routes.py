"""``POST /v1/chat/completions`` (streamed and not) and ``GET /v1/models``.

A request is turned into an engine job (``completions.prepare_job``), submitted, and
answered either as one JSON body or as server-sent events:
first a chunk with the assistant role, then one per text delta, then a chunk with the
finish reason and ``x_vlmserve``, a usage chunk when ``stream_options.include_usage``
is set, and ``data: [DONE]``. When the client goes away, the engine request is aborted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from vlmserve.errors import ShuttingDownError
from vlmserve.http.auth import api_key_dependency
from vlmserve.http.completions import CompletionJob, prepare_job
from vlmserve.http.errors import API_ERRORS, NotFoundError, error_body
from vlmserve.http.generation import ClientGone, Generation, collect_text, error_for
from vlmserve.http.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ModelCard,
    ModelList,
    PhaseProgress,
    ProgressExtension,
    ResponseMessage,
    ResponseToolCall,
    ToolCallDelta,
)
from vlmserve.http.services import Services
from vlmserve.http.streaming import (
    SSE_HEADERS,
    ClosingStreamingResponse,
    error_events,
    sse_event,
)
from vlmserve.http.tool_calls import Piece, ToolCallParser, split_answer
from vlmserve.types import FinishReason, PhaseReport

SOURCE = "api"  # the metrics label for requests made through this router


def openai_router(services: Services) -> APIRouter:
    """The ``/v1`` routes of one app (API key enforced when configured)."""
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(api_key_dependency(services.settings.api_key_value))],
        responses=API_ERRORS,
    )

    @router.get("/models")
    async def list_models() -> ModelList:
        model = services.model()
        return ModelList(data=[ModelCard(id=model.model_id, created=model.created)])

    @router.post("/chat/completions", response_model=None, responses={200: {
        "model": ChatCompletion,
        "description": "the answer, or its server-sent events (ChatCompletionChunk per "
                       "event, then ``[DONE]``) when ``stream`` is set",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
    async def chat_completions(body: ChatCompletionRequest,
                               request: Request) -> Response | ChatCompletion:
        model = services.model()
        session_id = services.checked_session_id(body.session_id)
        if not body.stream:
            async with services.session_locks.hold(session_id):
                job = await prepare_job(services, model, body, session_id)
                return await _complete(services, job, request)

        # Streaming: the session's lock is held until the stream ends, which is after this
        # function has returned, so it is taken and released by hand.
        lock = services.session_locks.get(session_id) if session_id else None
        if lock is not None:
            await lock.acquire()
        generation = None
        try:
            job = await prepare_job(services, model, body, session_id)
            generation = services.generation(job.request, SOURCE, job.chat.dropped_turns)
            await generation.start(request.receive)
        except BaseException as exc:
            if generation is not None:
                await generation.close()
            if lock is not None:
                lock.release()
            if isinstance(exc, ClientGone):  # left while queued: nobody to answer
                return Response(status_code=499)
            if isinstance(exc, ShuttingDownError) and generation is not None and (
                    generation.final is not None):
                # It was queued when the server began to stop: its stream ends as a
                # running one's does (an error event, [DONE]), not with a bare 503.
                return ClosingStreamingResponse(error_events(exc), media_type="text/event-stream",
                                                headers=SSE_HEADERS)
            raise
        released = False

        async def on_close() -> None:
            nonlocal released
            await generation.close()  # aborts the request if the client left early
            if lock is not None and not released:
                released = True
                lock.release()

        return ClosingStreamingResponse(_sse(services, job, generation), on_close=on_close,
                                        media_type="text/event-stream", headers=SSE_HEADERS)

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                      include_in_schema=False)
    async def unknown(path: str, request: Request) -> None:
        # Without this, the page mounted on / would answer unknown /v1 paths with its own
        # 404 body; API clients expect OpenAI's error shape.
        raise NotFoundError(f"no endpoint {request.method} /v1/{path}; this server offers "
                            "POST /v1/chat/completions, POST /v1/responses and GET /v1/models")

    return router


async def _complete(services: Services, job: CompletionJob, request: Request) -> Response:
    """Run to the end and answer one JSON body; abort if the client disconnects first."""
    generation = services.generation(job.request, SOURCE, job.chat.dropped_turns)
    text = await collect_text(generation, request)
    if text is None:  # nobody is left to answer
        return Response(status_code=499)

    final = generation.final
    if generation.error is not None:
        raise generation.error
    assert final is not None and final.stats is not None  # _collect ran to the last delta
    content: str | None = text
    calls: list = []
    if job.tools.parses_calls:
        content, calls = split_answer(text, job.tools.names)
    job.store_turn(services, content, tuple(calls))
    message = ResponseMessage(content=content, tool_calls=[
        ResponseToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
        for c in calls] or None)
    completion = ChatCompletion(
        id=job.id,
        created=job.created,
        model=job.model.model_id,
        choices=[Choice(message=message, finish_reason=_finish_name(final.finish_reason,
                                                                   bool(calls)),
                        logprobs=(ChoiceLogprobs.of(generation.logprobs)
                                  if job.request.sampling.logprobs is not None else None))],
        usage=job.usage(final.stats),
        x_vlmserve=job.extension(final.stats, text),
    )
    return JSONResponse(completion.model_dump(mode="json"))


def _finish_name(reason: FinishReason | None, called: bool) -> str:
    """OpenAI's finish reason: ``tool_calls`` when an answer that ended by itself holds
    calls (one cut by ``max_tokens`` stays ``length``)."""
    if called and reason is FinishReason.STOP:
        return "tool_calls"
    return (reason or FinishReason.STOP).value


def progress_extension(report: PhaseReport) -> ProgressExtension:
    return ProgressExtension(progress=PhaseProgress(
        phase=report.phase.value, position=report.position,
        elapsed_ms=round(report.elapsed_ms, 1)))


async def _sse(services: Services, job: CompletionJob,
               generation: Generation) -> AsyncIterator[str]:
    def chunk(delta: Delta | None = None, logprobs: ChoiceLogprobs | None = None,
              **fields: object) -> str:
        # logprobs is set only when asked: unset fields are left out of the chunk.
        extra = {"logprobs": logprobs} if logprobs is not None else {}
        choices = ([ChunkChoice(delta=delta, finish_reason=None, **extra)]
                   if delta is not None else [])
        body = ChatCompletionChunk(id=job.id, created=job.created, model=job.model.model_id,
                                   choices=choices, **fields)
        return sse_event(body.sse_json())

    parser = ToolCallParser(job.tools.names) if job.tools.parses_calls else None
    parts: list[str] = []
    n_calls = 0

    def pieces_out(pieces: list[Piece], logprobs: ChoiceLogprobs | None = None) -> list[str]:
        """Chunks for the pieces; ``logprobs`` (an engine delta's tokens) ride on the first
        text chunk, or on a chunk of their own when there is none (a call holds text)."""
        nonlocal n_calls
        events: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                parts.append(piece)
                events.append(chunk(Delta(content=piece), logprobs=logprobs))
                logprobs = None
                continue
            # A call streams as OpenAI's do: its name first, then its arguments.
            events.append(chunk(Delta(tool_calls=[ToolCallDelta(
                index=n_calls, id=piece.id, type="function",
                function=FunctionCallDelta(name=piece.name, arguments=""))])))
            events.append(chunk(Delta(tool_calls=[ToolCallDelta(
                index=n_calls, function=FunctionCallDelta(arguments=piece.arguments))])))
            n_calls += 1
        if logprobs is not None:
            events.append(chunk(Delta(), logprobs=logprobs))
        return events

    yield chunk(Delta(role="assistant", content=""))
    asked = job.request.sampling.logprobs is not None
    async for delta in generation.deltas():
        if delta.phase is not None:  # only requests that opted in get these
            yield chunk(x_vlmserve=progress_extension(delta.phase))
            continue
        logprobs = ChoiceLogprobs.of(delta.logprobs) if asked and delta.logprobs else None
        text = delta.text
        pieces = (parser.feed(text) if parser else [text]) if text else []
        for event in pieces_out(pieces, logprobs):
            yield event
        if not delta.finished:
            continue
        if parser is not None:
            for event in pieces_out(parser.finish()):
                yield event
        stats = delta.stats
        error = generation.error
        if error is not None or stats is None:
            # Headers are sent: the error travels as an event (the SDKs raise on it).
            error = error or error_for(delta)
            yield sse_event(error_body(error.http_status, error.message, error.code))
            break
        calls = tuple(parser.calls) if parser is not None else ()
        answer = "".join(parts)
        job.store_turn(services, answer, calls)
        final = ChatCompletionChunk(
            id=job.id, created=job.created, model=job.model.model_id,
            choices=[ChunkChoice(delta=Delta(),
                                 finish_reason=_finish_name(delta.finish_reason, bool(calls)))],
            x_vlmserve=job.extension(stats, answer),
        )
        yield sse_event(final.sse_json())
        if job.include_usage:
            yield chunk(usage=job.usage(stats))
    yield sse_event("[DONE]")

"""``POST /v1/responses``: OpenAI's Responses API over the same engine path as chat.

A request becomes the same engine job as a chat completion (``completions``' grammar
rules, ``conversation``'s sliding window and rendering, tools through ``tools``), and the
answer becomes Responses output items (``responses_output``). A stored response
(``store``, the default) keeps its conversation in the app's ``SessionStore`` under the
response id, so ``previous_response_id`` continues it exactly like a ``session_id``:
same rendered prefix, so the slot's KV cache is reused. As OpenAI does, a previous
response's ``instructions`` are not carried over. Streams use the Responses event
sequence (``response.created``, ``response.in_progress``, item / part / text events,
then ``response.completed`` or ``response.incomplete``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from vlmserve.chat import ChatMessage, TextPart
from vlmserve.errors import RequestError, VlmserveError
from vlmserve.http.auth import api_key_dependency
from vlmserve.http.completions import CompletionJob, grammar_for, images_of
from vlmserve.http.conversation import (
    check_request_text,
    check_system_first,
    compose,
    fit_and_render,
    prompt_budget,
)
from vlmserve.http.engine_holder import LoadedModel
from vlmserve.http.errors import API_ERRORS, NotFoundError
from vlmserve.http.generation import ClientGone, Generation, collect_text, error_for
from vlmserve.http.responses_input import input_messages
from vlmserve.http.responses_output import ResponseOutput, usage
from vlmserve.http.responses_schemas import ResponsesRequest
from vlmserve.http.services import Services
from vlmserve.http.streaming import SSE_HEADERS, ClosingStreamingResponse
from vlmserve.http.tool_calls import Piece, ToolCallParser
from vlmserve.http.tools import plan_tools
from vlmserve.sessions import validate_session_id
from vlmserve.types import FinishReason, SamplingParams, TokenDelta
from vlmserve.types import Request as EngineRequest

SOURCE = "api"


class PreviousResponseNotFound(VlmserveError):
    """``previous_response_id`` names no stored response (never stored, expired, or lost
    in a restart)."""

    http_status = 404
    code = "previous_response_not_found"


class ResponsesJob:
    """One Responses request, prepared: the engine job and what the answer object echoes."""

    def __init__(self, body: ResponsesRequest, job: CompletionJob,
                 instructions: ChatMessage | None) -> None:
        self.body = body
        self.job = job
        self._instructions = instructions

    @property
    def id(self) -> str:
        return self.job.id

    def pieces(self, text: str, parser: ToolCallParser | None, final: bool) -> list[Piece]:
        if parser is None:
            return [text] if text else []
        return parser.feed(text) + (parser.finish() if final else [])

    def store(self, services: Services, output: ResponseOutput,
              response: dict[str, Any]) -> None:
        """Keep the conversation (without this request's instructions) plus the answer,
        under the response id, for ``previous_response_id``; and the response object."""
        if not self.body.store:
            return
        services.responses.put(response)
        text = output.text
        reply = ChatMessage("assistant", (TextPart(text),) if text else (),
                            tool_calls=output.calls)
        kept = [m for m in self.job.chat.messages if m is not self._instructions]
        services.sessions.replace(self.id, [*kept, reply])

    def response(self, status: str, output: ResponseOutput | None = None,
                 delta: TokenDelta | None = None) -> dict[str, Any]:
        """The response object; ``delta`` is the last one (usage, figures) when finished."""
        body = self.body
        stats = delta.stats if delta is not None else None
        fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) if body.text else {
            "type": "text"}
        out: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.job.created,
            "status": status, "model": self.job.model.model_id,
            "output": output.items if output is not None else [],
            "error": None, "incomplete_details": None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": self.job.request.sampling.temperature,
            "top_p": self.job.request.sampling.top_p,
            "previous_response_id": body.previous_response_id, "store": body.store,
            "text": {"format": fmt},
            "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
            "tool_choice": _tool_choice(body),
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "metadata": body.metadata or {},
            "usage": usage(stats) if stats is not None else None,
        }
        if status == "incomplete":
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        if stats is not None:
            out["x_vlmserve"] = self.job.extension(stats).model_dump(mode="json")
        return out


def _tool_choice(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


def _status(delta: TokenDelta) -> str:
    return "incomplete" if delta.finish_reason is FinishReason.LENGTH else "completed"


async def prepare(services: Services, model: LoadedModel, body: ResponsesRequest,
                  ) -> ResponsesJob:
    """Build the job (``VlmserveError`` for everything the client can fix)."""
    settings = services.settings
    tools = plan_tools(body.chat_tools(), body.chat_tool_choice(), body.parallel_tool_calls)
    response_format = body.text.format.as_response_format() if body.text else None
    grammar = grammar_for(response_format, None, tools)
    max_tokens = body.max_output_tokens or settings.max_tokens
    given = {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
             "min_p": body.min_p, "repeat_penalty": body.repeat_penalty, "seed": body.seed}
    sampling = SamplingParams(max_tokens=max_tokens, grammar=grammar,
                              **{k: v for k, v in given.items() if v is not None})

    new = await input_messages(body.input, services.images)
    history: list[ChatMessage] = []
    if body.previous_response_id is not None:
        try:
            previous = validate_session_id(body.previous_response_id)
        except RequestError:
            previous = None
        history = services.sessions.get(previous, offered=images_of(new)) if previous else []
        if not history:
            raise PreviousResponseNotFound(
                f"previous response {body.previous_response_id[:64]!r} not found: it was "
                "not stored (store: false), has expired, or the server restarted")
    instructions = ChatMessage.system(body.instructions) if body.instructions else None
    check_system_first(new, "input")
    new = [*([instructions] if instructions else []), *new]
    check_request_text(model, settings, new, tools.rendered)
    messages = compose(history, new)
    budget = prompt_budget(settings.context_budget, model.engine.info.n_ctx_per_slot,
                           max_tokens)
    chat = await asyncio.to_thread(fit_and_render, model, messages, budget, tools.rendered)
    response_id = f"resp_{uuid.uuid4().hex}"
    job = CompletionJob(id=response_id, created=int(time.time()), model=model,
                        request=EngineRequest(response_id, chat.prompt, sampling), chat=chat,
                        session_id=None, template=None, stream=body.stream,
                        include_usage=False, tools=tools)
    return ResponsesJob(body, job, instructions)


def _sse(event: dict[str, Any]) -> str:
    return (f"event: {event['type']}\n"
            f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n")


def responses_router(services: Services) -> APIRouter:
    """``POST /v1/responses`` (API key enforced when configured)."""
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(api_key_dependency(services.settings.api_key_value))],
        responses=API_ERRORS,
    )

    @router.post("/responses", response_model=None, responses={200: {
        "description": "a Response object, or its event stream when ``stream`` is set",
        "content": {"application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}}}}})
    async def create_response(body: ResponsesRequest, request: Request) -> Response:
        model = services.model()
        rjob = await prepare(services, model, body)
        generation = services.generation(rjob.job.request, SOURCE, rjob.job.chat.dropped_turns)
        if not body.stream:
            return await _complete(services, rjob, generation, request)
        try:
            await generation.start(request.receive)
        except ClientGone:  # left while queued: nobody to answer
            await generation.close()
            return Response(status_code=499)
        except BaseException:
            await generation.close()
            raise
        return ClosingStreamingResponse(_stream(services, rjob, generation),
                                        on_close=generation.close,
                                        media_type="text/event-stream", headers=SSE_HEADERS)

    @router.get("/responses/{response_id}", responses={200: {
        "description": "the stored Response object",
        "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def retrieve_response(response_id: str) -> JSONResponse:
        response = services.responses.get(response_id)
        if response is None:
            raise NotFoundError(f"no stored response {response_id[:64]!r}")
        return JSONResponse(response)

    @router.delete("/responses/{response_id}", responses={200: {
        "description": "``{id, object, deleted: true}``",
        "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def delete_response(response_id: str) -> JSONResponse:
        found = services.responses.delete(response_id)
        if found:
            services.sessions.delete(response_id)
        else:
            raise NotFoundError(f"no stored response {response_id[:64]!r}")
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    return router


async def _complete(services: Services, rjob: ResponsesJob, generation: Generation,
                    request: Request) -> Response:
    text = await collect_text(generation, request)
    if text is None:
        return Response(status_code=499)
    if generation.error is not None:
        raise generation.error
    final = generation.final
    assert final is not None and final.stats is not None
    parser = ToolCallParser(rjob.job.tools.names) if rjob.job.tools.parses_calls else None
    output = ResponseOutput()
    for piece in rjob.pieces(text, parser, final=True):
        output.add(piece)
    output.finish()
    response = rjob.response(_status(final), output, final)
    rjob.store(services, output, response)
    return JSONResponse(response)


async def _stream(services: Services, rjob: ResponsesJob,
                  generation: Generation) -> AsyncIterator[str]:
    sequence = 0

    def event(data: dict[str, Any]) -> str:
        nonlocal sequence
        data = {**data, "sequence_number": sequence}
        sequence += 1
        return _sse(data)

    output = ResponseOutput()
    parser = ToolCallParser(rjob.job.tools.names) if rjob.job.tools.parses_calls else None
    yield event({"type": "response.created", "response": rjob.response("in_progress")})
    yield event({"type": "response.in_progress", "response": rjob.response("in_progress")})
    async for delta in generation.deltas():
        for piece in rjob.pieces(delta.text, parser, final=delta.finished):
            for data in output.add(piece):
                yield event(data)
        if not delta.finished:
            continue
        for data in output.finish():
            yield event(data)
        error = generation.error
        if error is not None or delta.stats is None:
            error = error or error_for(delta)
            yield event({"type": "error", "code": error.code, "message": error.message,
                         "param": None})
            failed = rjob.response("failed", output)
            failed["error"] = {"code": error.code, "message": error.message}
            yield event({"type": "response.failed", "response": failed})
            return
        status = _status(delta)
        response = rjob.response(status, output, delta)
        rjob.store(services, output, response)
        yield event({"type": f"response.{status}", "response": response})

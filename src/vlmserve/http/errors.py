"""Every error the HTTP layer answers, in OpenAI's shape.

The body is always ``{"error": {"message", "type", "param", "code"}}``: the SDKs turn it
into their typed exceptions (``openai.BadRequestError`` ...). ``message`` is one line a
person can act on; a traceback never reaches a response (it goes to the server log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlmserve.errors import VlmserveError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    message: str = Field(description="one line a person can act on")
    type: str = Field(description="OpenAI's error type: invalid_request_error, "
                      "authentication_error, not_found_error, server_error")
    param: str | None = Field(description="the parameter at fault, when one is")
    code: str | None = Field(description="vlmserve's code (docs/api.md, Errors)")


class ErrorBody(BaseModel):
    """Every error answer's body, whatever the status."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status it can answer with, in ``ErrorBody``'s
    shape, for the OpenAPI schema (what clients and schemathesis check answers against)."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


_WHEN = {
    400: "a bad parameter, body, conversation, image or text (code names which)",
    401: "missing or wrong API key (when the server has one)",
    404: "no such endpoint or stored response",
    413: "the body, or an image in it, is over the server's limit",
    500: "the engine failed; details in the server log",
    503: "the model is not loaded yet, the queue is full, or the server is shutting down",
}
API_ERRORS = error_responses(400, 401, 404, 413, 500, 503)  # what every /v1 route may answer


def drop_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 for every body; this server answers 400 (OpenAI's status)
    instead, with ``ErrorBody``: the 422s leave the schema, and so does their model."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


class RequestTooLargeError(VlmserveError):
    """The request body is over the configured limit."""

    http_status = 413
    code = "request_too_large"


class AuthenticationError(VlmserveError):
    """Missing or wrong API key."""

    http_status = 401
    code = "invalid_api_key"


class NotFoundError(VlmserveError):
    """No such endpoint."""

    http_status = 404
    code = "not_found"


class EngineUnavailableError(VlmserveError):
    """The model is still loading, or failed to load."""

    http_status = 503
    code = "model_not_ready"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestAbortedError(VlmserveError):
    """The server stopped the request (it is shutting down)."""

    http_status = 503
    code = "request_aborted"


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for a status (the SDKs read the status; people read this)."""
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(status: int, message: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param,
                      "code": code}}


def error_response(status: int, message: str, code: str | None = None,
                   param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status,
                        headers=headers)


def vlmserve_error_response(exc: VlmserveError) -> JSONResponse:
    """The response for one of our errors; ``Retry-After`` when it says when to retry."""
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        headers["Retry-After"] = str(int(retry_after))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.http_status, exc.message, exc.code,
                          param=exc.param, headers=headers or None)


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """(one-line message, param path) for the first problem pydantic found."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    # A union ("content": a string or a list of parts) reports one error per branch; the
    # deepest names the real problem ("content.0.text" missing), not "content: not a string".
    error = max(errors, key=lambda e: len(e.get("loc", ())))
    kind = error.get("type")
    raw = [p for p in error.get("loc", ()) if p != "body"]
    # A tagged union repeats the tag after the index ("content.0.text.text"): once is enough.
    loc = [str(p) for i, p in enumerate(raw)
           if not (0 < i < len(raw) - 1 and isinstance(raw[i - 1], int) and raw[i + 1] == p)]
    # Unions add each branch's name to the path ("messages.0.content.list[...].text",
    # "...content.str"): keep the parts a person would write.
    param = ".".join(p for p in loc if not p.startswith(("list[", "function-"))
                     and p not in _BRANCHES) or None
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    if kind == "missing":
        if param is None:
            return ("the request body is empty: send a JSON object (Content-Type: "
                    "application/json)"), None
        return f"missing required parameter: {param}", param
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        got = type(error.get("input")).__name__
        if got == "bytes":  # FastAPI passes a body it did not parse as JSON as bytes
            return ("the request body must be JSON sent with Content-Type: "
                    "application/json"), None
        return f"the request body must be a JSON object, not {_JSON_NAMES.get(got, got)}", None
    message = str(error.get("msg", "invalid value")).replace("Value error, ", "")
    if kind in _STRICT_TYPES:
        got = type(error.get("input")).__name__
        message = f"{message}, got {_JSON_NAMES.get(got, got)}"
    return (f"invalid parameter {param}: {message}" if param else message), param


_BRANCHES = ("str", "int", "float", "bool", "list", "dict", "none")
_STRICT_TYPES = ("int_type", "float_type", "bool_type", "string_type", "list_type")
_JSON_NAMES = {"str": "a string", "int": "an integer", "float": "a number",
               "bool": "a boolean", "list": "an array", "dict": "an object",
               "NoneType": "null"}


def _required_fields(request: Request) -> list[str]:
    """The required fields of the route's body model (what an empty body is missing)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", {})
    return [name for name, info in fields.items() if info.is_required()]


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app's own routes raise to an OpenAI-shaped JSON body."""

    @app.exception_handler(VlmserveError)
    async def _vlmserve_error(request: Request, exc: VlmserveError) -> JSONResponse:
        return vlmserve_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers 400 for a bad parameter, not FastAPI's default 422.
        message, param = describe_validation_error(exc)
        if message.startswith("the request body is empty"):
            required = _required_fields(request)
            if required:
                message = message.replace("a JSON object", "a JSON object with "
                                          + ", ".join(required), 1)
        return error_response(400, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's words when the body does not decode (not UTF-8, say)
            detail = "the request body is not valid JSON text (it must be UTF-8)"
        return error_response(exc.status_code, detail,
                              codes.get(exc.status_code, "http_error"),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; see the server log",
                              "internal_error")

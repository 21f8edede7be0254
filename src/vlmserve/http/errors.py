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
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlmserve.errors import VlmserveError

log = logging.getLogger(__name__)


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
    return error_response(exc.http_status, exc.message, exc.code, headers=headers or None)


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """(one-line message, param path) for the first problem pydantic found."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    error = errors[0]
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    # Discriminated unions add the tag to the path ("messages.0.content.list[...].text"):
    # keep the parts a person would write.
    param = ".".join(p for p in loc if not p.startswith(("list[", "function-"))) or None
    if error.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if error.get("type") == "missing":
        return f"missing required parameter: {param}", param
    message = str(error.get("msg", "invalid value")).replace("Value error, ", "")
    return (f"invalid parameter {param}: {message}" if param else message), param


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app's own routes raise to an OpenAI-shaped JSON body."""

    @app.exception_handler(VlmserveError)
    async def _vlmserve_error(request: Request, exc: VlmserveError) -> JSONResponse:
        return vlmserve_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers 400 for a bad parameter, not FastAPI's default 422.
        message, param = describe_validation_error(exc)
        return error_response(400, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, str(exc.detail),
                              codes.get(exc.status_code, "http_error"),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; see the server log",
                              "internal_error")

"""Errors a user can act on.

Every error that reaches a person (CLI line, HTTP JSON body, page banner) is a
``VlmserveError``: its message names the problem in one line. ``http_status``
says which 4xx/5xx the HTTP layer answers with; ``code`` is the OpenAI-style
error type string.
"""

from __future__ import annotations


class VlmserveError(Exception):
    """Base class: a one-line, user-facing problem."""

    http_status: int = 400
    code: str = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request parameter at fault, when one is (HTTP's "param")


class ModelLoadError(VlmserveError):
    """A model or mmproj file is missing, unreadable, malformed or mismatched."""

    http_status = 500
    code = "model_load_error"


class ModelNotFoundError(VlmserveError):
    """No model was given and none is on disk."""

    http_status = 404
    code = "model_not_found"


class ImageError(VlmserveError):
    """An image could not be decoded or breaks a configured limit."""

    code = "invalid_image"


class ImageTooLargeError(ImageError):
    """An image is over the byte, pixel or frame limit."""

    http_status = 413
    code = "image_too_large"


class RequestError(VlmserveError):
    """A request is malformed (empty prompt, bad sampling values, too long...)."""


class ContextOverflowError(RequestError):
    """The prompt does not fit in a slot's context window."""

    code = "context_length_exceeded"


class SessionImageGoneError(RequestError):
    """A session's earlier picture was evicted from the session picture store."""

    http_status = 410
    code = "session_image_gone"


class QueueFullError(VlmserveError):
    """The engine's bounded waiting queue is full; retry later."""

    http_status = 503
    code = "server_busy"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDownError(VlmserveError):
    """The server is stopping: it admits nothing new and ends what it could not finish.

    One type for every layer, so a request refused at the door, one that was still
    queued and one cut when the drain ran out all end the same way (503).
    """

    http_status = 503
    code = "server_shutting_down"
    MESSAGE = "the server is shutting down; retry on another server or after it restarts"

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class EngineError(VlmserveError):
    """llama.cpp failed while serving a request."""

    http_status = 500
    code = "engine_error"


class InsufficientMemoryError(VlmserveError):
    """The model, its KV cache and buffers would not fit in the memory available."""

    http_status = 507
    code = "insufficient_memory"


class PullError(VlmserveError):
    """A model download failed: hub unreachable, file missing, disk full, bad checksum."""

    http_status = 502
    code = "pull_error"


class VideoError(VlmserveError):
    """A video clip or stream could not be read, or breaks a configured limit."""

    code = "invalid_video"


class VideoTooLargeError(VideoError):
    """A clip is over the byte or duration limit."""

    http_status = 413
    code = "video_too_large"

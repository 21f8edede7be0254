"""Errors of the Ray deployment, in the project's ``VlmserveError`` family."""

from __future__ import annotations

from vlmserve.errors import VlmserveError


class ReplicaLostError(VlmserveError):
    """The engine replica serving a request died; Ray starts a new one. Retry: a
    server-side session keeps its history (only cache warmth was lost)."""

    http_status = 503
    code = "replica_unavailable"
    retry_after_s = 1  # a Retry-After header on a plain (not streamed) answer


class RayUnavailableError(VlmserveError):
    """Ray (the ``vlmserve[ray]`` extra) is not installed, or the cluster cannot be reached."""

    http_status = 500
    code = "ray_unavailable"

"""API-key check for ``/v1/*`` and ``/metrics`` (``Authorization: Bearer KEY``)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from vlmserve.http.errors import AuthenticationError


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_key_dependency(api_key: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that raises 401 unless the request carries ``api_key``.

    With no key configured it lets everything through. The comparison takes the same
    time whatever the key's first wrong character (``hmac.compare_digest``).
    """

    def require_api_key(request: Request) -> None:
        if api_key is None:
            return
        token = bearer_token(request)
        if token is None:
            raise AuthenticationError(
                "missing API key: send the header 'Authorization: Bearer YOUR_KEY'")
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise AuthenticationError("invalid API key")

    return require_api_key

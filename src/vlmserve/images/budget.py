"""How many vision tokens one image may get: the server's bounds, a request's wishes.

Qwen's processor never gives an image fewer than 64 tokens; grounding and OCR read
small things well only from about 1024. A request narrows the server's bounds with
OpenAI's ``detail`` (``low`` / ``high`` / ``auto``), explicit min / max image tokens,
or a task that needs a high floor (boxes, OCR); it can never leave them.
"""

from __future__ import annotations

from vlmserve.config import TokenBudget
from vlmserve.errors import RequestError

DETAIL_LOW_TOKENS = 256  # detail "low": a quick look
GROUNDING_MIN_TOKENS = 1024  # Qwen's advice (and mtmd's load-time warning) for boxes and OCR
DETAILS = ("auto", "low", "high")


def narrow_budget(server: TokenBudget, *, detail: str | None = None,
                  min_tokens: int | None = None, max_tokens: int | None = None, floor: int | None = None) -> TokenBudget:
    """The server's budget narrowed by one request.

    ``detail="low"`` caps at 256 tokens; ``high`` and ``auto`` keep the server's cap.
    ``min_tokens`` / ``max_tokens`` outside the server's bounds are a ``RequestError``
    (HTTP 400) naming them. ``floor`` is a task's need (grounding: 1024): raised to,
    but never past, the cap.
    """
    if detail is not None and detail not in DETAILS:
        raise RequestError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    for name, value in (("min_tokens", min_tokens), ("max_tokens", max_tokens)):
        if value is not None and not (server.min_tokens <= value <= server.max_tokens):
            raise RequestError(
                f"image {name} must be within the server's bounds "
                f"[{server.min_tokens}, {server.max_tokens}], got {value}")
    low, high = min_tokens or server.min_tokens, max_tokens or server.max_tokens
    if detail == "low" and max_tokens is None:
        high = max(low, min(high, DETAIL_LOW_TOKENS))
    if floor is not None and min_tokens is None:
        low = max(low, min(floor, high))
    if low > high:
        raise RequestError(f"image min tokens ({low}) exceed max tokens ({high})")
    return TokenBudget(low, high)

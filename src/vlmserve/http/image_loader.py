"""Image URLs from API requests to ``PreparedImage``s.

``data:`` URIs are decoded here. ``http(s)`` URLs are refused unless the operator
allowed them: fetching whatever URL a request names lets any client make the server
reach into its own network (SSRF), so it is opt-in, and ``remote_images`` refuses
non-public addresses on every hop (see there), with size and time limits.
Decoding and resizing are CPU work (Pillow), run in a worker thread so the event loop
keeps streaming other requests' tokens meanwhile.
"""

from __future__ import annotations

import asyncio

from vlmserve.config import ImageOptions, TokenBudget
from vlmserve.errors import ImageError, RequestError
from vlmserve.http.remote_images import FETCH_FAILED, RemotePolicy, fetch_image_bytes
from vlmserve.images import decode_data_uri, prepare_image
from vlmserve.types import PreparedImage


class ImageLoader:
    """Turns the ``url`` of an ``image_url`` content part into a ``PreparedImage``."""

    def __init__(self, options: ImageOptions, allow_remote: bool = False,
                 timeout_s: float = 10.0, policy: RemotePolicy | None = None) -> None:
        self.options = options
        self.allow_remote = allow_remote
        self.timeout_s = timeout_s
        self.policy = policy or RemotePolicy()

    async def load(self, url: str, tokens: TokenBudget | None = None) -> PreparedImage:
        """The image at ``url``, resized by Qwen's rule within ``tokens`` (default: the
        server's budget)."""
        scheme = url[: url.find(":")].lower() if ":" in url[:12] else ""
        if scheme == "data":
            data = await asyncio.to_thread(decode_data_uri, url, self.options.max_bytes)
        elif scheme in ("http", "https"):
            if not self.allow_remote:
                raise RequestError(
                    "remote image URLs are disabled on this server; send the image inline as "
                    "a data:image/...;base64,... URI (or start the server with "
                    "--allow-remote-images)")
            data = await fetch_image_bytes(url, self.policy, self.options.max_bytes,
                                           self.timeout_s)
            try:
                return await asyncio.to_thread(prepare_image, data, self.options, None, tokens)
            except ImageError:  # not an image: the same text as any failed fetch
                raise ImageError(FETCH_FAILED) from None
        else:
            raise ImageError("image_url must be a data:image/...;base64,... URI"
                             + (" or an http(s) URL" if self.allow_remote else ""))
        return await asyncio.to_thread(prepare_image, data, self.options, None, tokens)

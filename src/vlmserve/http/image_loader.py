"""Image URLs from API requests to ``PreparedImage``s.

``data:`` URIs are decoded here. ``http(s)`` URLs are refused unless the operator
allowed them: fetching whatever URL a request names lets any client make the server
reach into its own network (SSRF), so it is opt-in, with size and time limits.
Decoding and resizing are CPU work (Pillow), run in a worker thread so the event loop
keeps streaming other requests' tokens meanwhile.
"""

from __future__ import annotations

import asyncio

import httpx

from vlmserve.config import ImageOptions, TokenBudget
from vlmserve.errors import ImageError, ImageTooLargeError, RequestError
from vlmserve.images import decode_data_uri, prepare_image
from vlmserve.types import PreparedImage


class ImageLoader:
    """Turns the ``url`` of an ``image_url`` content part into a ``PreparedImage``."""

    def __init__(self, options: ImageOptions, allow_remote: bool = False,
                 timeout_s: float = 10.0) -> None:
        self.options = options
        self.allow_remote = allow_remote
        self.timeout_s = timeout_s

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
            data = await self._fetch(url)
        else:
            raise ImageError("image_url must be a data:image/...;base64,... URI"
                             + (" or an http(s) URL" if self.allow_remote else ""))
        return await asyncio.to_thread(prepare_image, data, self.options, None, tokens)

    async def _fetch(self, url: str, limit: int | None = None, what: str = "image") -> bytes:
        """The body at ``url``, at most ``limit`` bytes (default: the image limit); errors
        are ``ImageError`` naming ``what`` was fetched (the video loader shares this)."""
        try:
            # wait_for bounds the whole download; httpx's timeout bounds each read.
            return await asyncio.wait_for(
                self._download(url, limit or self.options.max_bytes, what), self.timeout_s)
        except asyncio.TimeoutError:
            raise ImageError(
                f"could not fetch the {what} URL: no complete answer in {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            detail = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise ImageError(f"could not fetch the {what} URL: {detail}") from None

    async def _download(self, url: str, limit: int, what: str) -> bytes:
        too_large = f"the {what} at the URL is over the limit of {limit / 1e6:.1f} MB"
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True,
                                     max_redirects=3) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImageError(
                        f"could not fetch the {what} URL: HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise ImageTooLargeError(too_large)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:  # the header may lie or be absent
                        raise ImageTooLargeError(too_large)
                    chunks.append(chunk)
                return b"".join(chunks)

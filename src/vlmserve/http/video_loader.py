"""``video_url`` content parts to ``PreparedClip``s, under the same rules as images.

``data:video/...;base64,...`` URIs are decoded here; ``http(s)`` URLs only when the
operator allowed remote media (``--allow-remote-images``: the same SSRF opt-in, fetched
refusing non-public addresses on every hop like ``ImageLoader``: ``remote_images``). Decoding is CPU work
(PyAV), run in a worker thread so other streams keep flowing meanwhile.
"""

from __future__ import annotations

import asyncio

from vlmserve.errors import ImageError, RequestError, VideoError
from vlmserve.http.remote_images import RemotePolicy, fetch_image_bytes
from vlmserve.http.schemas import VideoURL
from vlmserve.types import PreparedClip
from vlmserve.video import VideoOptions, decode_video_data_uri, prepare_clip


class VideoLoader:
    """Turns a ``video_url`` (url, fps, max_frames) into a ``PreparedClip``."""

    def __init__(self, options: VideoOptions, allow_remote: bool = False,
                 timeout_s: float = 30.0, policy: RemotePolicy | None = None) -> None:
        self.options = options
        self.allow_remote = allow_remote
        self.timeout_s = timeout_s
        self.policy = policy or RemotePolicy()

    async def load(self, part: VideoURL) -> PreparedClip:
        sampling = self.options.sampling(part.fps, part.max_frames)  # a 400 before decoding
        url = part.url
        scheme = url[: url.find(":")].lower() if ":" in url[:12] else ""
        if scheme == "data":
            data = await asyncio.to_thread(decode_video_data_uri, url, self.options.max_bytes)
        elif scheme in ("http", "https"):
            if not self.allow_remote:
                raise RequestError(
                    "remote video URLs are disabled on this server; send the clip inline as "
                    "a data:video/...;base64,... URI (or start the server with "
                    "--allow-remote-images)")
            try:  # one text for every refused or failed fetch, as for images
                data = await fetch_image_bytes(url, self.policy, self.options.max_bytes,
                                               self.timeout_s)
            except ImageError as exc:
                raise VideoError(exc.message) from None
        else:
            raise VideoError("video_url must be a data:video/...;base64,... URI"
                             + (" or an http(s) URL" if self.allow_remote else ""))
        return await asyncio.to_thread(prepare_clip, data, self.options, sampling)


async def load_video(part: VideoURL, videos: VideoLoader | None) -> PreparedClip:
    """``videos.load(part)``, or a 400 where this caller takes no video (no loader)."""
    if videos is None:
        raise RequestError("video_url parts are not accepted here")
    return await videos.load(part)

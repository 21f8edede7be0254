"""Untrusted clip bytes -> the facts of their video stream, then the sampled frames.

Two passes over the bytes, both through PyAV: ``probe`` opens the container, checks its
video stream (a codec this FFmpeg can decode, a frame size, a duration under the limit)
and counts frames by demuxing packets, which decodes nothing; ``decode_frames`` then
decodes in order and keeps only the frames asked for, so a long clip never sits in memory
whole. Every FFmpeg failure becomes a one-line ``VideoError``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from vlmserve.errors import VideoError, VideoTooLargeError
from vlmserve.video.options import VideoOptions
from vlmserve.video.pyav import import_av
from vlmserve.video.sampling import DEFAULT_SOURCE_FPS


@dataclass(frozen=True)
class ClipInfo:
    """What ``probe`` learned about a clip's first video stream."""

    width: int
    height: int
    fps: float  # the stream's average frame rate (24 when the file does not say)
    total_frames: int  # counted from packets
    duration_s: float
    codec: str


def _ffmpeg_message(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:120] or type(exc).__name__


def probe(data: bytes, options: VideoOptions) -> ClipInfo:
    """Check a clip without decoding it; ``VideoError`` / ``VideoTooLargeError`` if refused."""
    av = import_av()
    if not data:
        raise VideoError("the video is empty")
    if len(data) > options.max_bytes:
        raise VideoTooLargeError(f"the video is {len(data) / 1e6:.1f} MB, over the limit of "
                                 f"{options.max_bytes / 1e6:.1f} MB")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoError("the file has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise VideoError("the video's codec is unknown to this PyAV/FFmpeg build: "
                                 "re-encode the clip as H.264, VP9 or MPEG-4")
            width, height = stream.codec_context.width, stream.codec_context.height
            if width <= 0 or height <= 0:
                raise VideoError("the video stream has no frame size")
            if width * height > options.max_frame_pixels:
                raise VideoTooLargeError(
                    f"video frames are {width}x{height}, over the limit of "
                    f"{options.max_frame_pixels / 1e6:.1f} megapixels")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or DEFAULT_SOURCE_FPS
            declared = _declared_duration(container, stream)
            if declared > options.max_seconds:
                raise _too_long(declared, options)
            codec = stream.codec_context.name
            total = sum(1 for packet in container.demux(stream) if packet.size)
    except VideoError:
        raise
    except av.EOFError:  # the container ends before its first frame
        raise VideoError("the video has no frames") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"not a readable video ({_ffmpeg_message(exc)})") from None
    if total == 0:
        raise VideoError("the video has no frames")
    duration = max(declared, total / fps)
    if duration > options.max_seconds:  # a header can understate the length
        raise _too_long(duration, options)
    return ClipInfo(width, height, fps, total, duration, codec)


def _declared_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _too_long(seconds: float, options: VideoOptions) -> VideoTooLargeError:
    return VideoTooLargeError(f"the video is {seconds:.0f} s long, over the limit of "
                              f"{options.max_seconds:.0f} s")


def decode_frames(data: bytes, indices: list[int],
                  size: tuple[int, int] | None = None) -> list[Image.Image]:
    """The frames at ``indices`` (sorted, repeats allowed) as RGB images, in order, each
    resized to ``size`` (bicubic, as Qwen's video processor) as soon as it is decoded, so
    a long clip of large frames never holds more than the small copies.

    A clip whose later frames do not decode gives the frames that did (the last one stands
    in for the missing); none at all is a ``VideoError``.
    """
    av = import_av()
    wanted = sorted(set(indices))
    wanted_set = set(wanted)
    got: dict[int, Image.Image] = {}
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            index = -1
            for frame in container.decode(stream):
                index += 1
                if index in wanted_set:
                    image = frame.to_image().convert("RGB")
                    if size is not None and image.size != size:
                        image = image.resize(size, Image.Resampling.BICUBIC)
                    got[index] = image
                if index >= wanted[-1]:
                    break
    except (av.FFmpegError, OSError, ValueError) as exc:
        if not got:
            raise VideoError(f"the video could not be decoded ({_ffmpeg_message(exc)})") from None
    if not got:
        raise VideoError("no frame of the video could be decoded")
    last = got[min(got)]
    out = []
    for i in indices:
        last = got.get(i, last)
        out.append(last)
    return out

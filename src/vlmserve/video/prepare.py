"""A clip's bytes -> a ``PreparedClip``: probe, sample, decode, resize, pair, timestamp.

1. ``decode.probe``: a video stream PyAV can decode, within the byte, size and duration
   limits; its frame count (packets) and frame rate;
2. ``sampling.sample_indices``: Qwen3-VL's frame choice at ``fps`` within the frame caps;
3. ``resize.video_frame_size``: one size for all frames (Qwen's video rule within the
   clip's token budget), known from the probe before any frame is decoded;
4. ``decode.decode_frames``: only those frames are kept, each resized (bicubic, as Qwen's
   video processor resamples) as soon as it is decoded;
5. an odd count gets its last frame repeated; one timestamp per pair; the content hash.
"""

from __future__ import annotations

from PIL import Image

from vlmserve.types import PreparedClip, PreparedImage
from vlmserve.video.decode import decode_frames, probe
from vlmserve.video.options import QWEN_MIN_PIXELS, Sampling, VideoOptions
from vlmserve.video.resize import clip_pixel_bounds, video_frame_size
from vlmserve.video.sampling import padded, pair_timestamps, sample_indices

DEFAULT_VIDEO_OPTIONS = VideoOptions()  # frozen: safe to share as a default


def prepare_clip(data: bytes, options: VideoOptions = DEFAULT_VIDEO_OPTIONS,
                 sampling: Sampling | None = None) -> PreparedClip:
    """The clip in ``data`` as Qwen3-VL sees it. Raises ``VideoError`` (not a video, no
    frames, a codec this FFmpeg lacks) or ``VideoTooLargeError`` (bytes, duration, size)."""
    sampling = sampling or options.sampling()
    info = probe(data, options)
    indices = sample_indices(info.total_frames, info.fps, sampling.fps, sampling.min_frames,
                             sampling.max_frames)
    size = frame_size(len(indices), info.width, info.height, sampling)
    frames = decode_frames(data, indices, size)  # resized as they are decoded
    return clip_from_frames(frames, indices, info.fps, sampling, info.duration_s, size)


def frame_size(num_frames: int, width: int, height: int, sampling: Sampling) -> tuple[int, int]:
    """The one size every frame of the clip gets (Qwen's video rule, the clip's budget)."""
    min_pixels, max_pixels = clip_pixel_bounds(sampling.max_tokens, QWEN_MIN_PIXELS)
    return video_frame_size(num_frames, width, height, min_pixels=min_pixels,
                            max_pixels=max_pixels)


def clip_from_frames(frames: list[Image.Image], indices: list[int], source_fps: float,
                     sampling: Sampling, duration_s: float = 0.0,
                     size: tuple[int, int] | None = None) -> PreparedClip:
    """Frames already chosen (``indices`` into a ``source_fps`` stream) -> a clip, each
    resized to ``size`` (default: the size the rule gives the first frame's)."""
    size = size or frame_size(len(frames), *frames[0].size, sampling)
    prepared: list[PreparedImage] = []
    for frame in frames:
        rgb = frame if frame.size == size else frame.resize(size, Image.Resampling.BICUBIC)
        prepared.append(PreparedImage.from_rgb(rgb.tobytes(), *size))
    while len(prepared) % 2:
        prepared.append(prepared[-1])
    timestamps = tuple(round(t, 6) for t in pair_timestamps(padded(indices), source_fps))
    frames_t = tuple(prepared)
    return PreparedClip(frames=frames_t, timestamps=timestamps,
                        content_hash=PreparedClip.hash_frames(frames_t, timestamps),
                        source_frames=len(frames), duration_s=duration_s)

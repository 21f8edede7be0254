"""Video clips and camera streams for Qwen3-VL: PyAV frames, sampling, timestamps, streams.

Clips become ``PreparedClip``s (``prepare_clip``, ``load_clip_file``); the engine sends
each frame pair to the vision encoder as one image chunk. Streams (``streams``) give a
frame every few seconds for ``vlmserve watch``; ``near_duplicate`` skips frames that did
not change.
"""

from vlmserve.video.options import Sampling, VideoOptions
from vlmserve.video.prepare import DEFAULT_VIDEO_OPTIONS, clip_from_frames, prepare_clip
from vlmserve.video.sources import (
    decode_video_data_uri,
    is_video_path,
    load_clip_file,
    read_video_bytes,
)

__all__ = ["DEFAULT_VIDEO_OPTIONS", "Sampling", "VideoOptions", "clip_from_frames",
           "decode_video_data_uri", "is_video_path", "load_clip_file", "prepare_clip",
           "read_video_bytes"]

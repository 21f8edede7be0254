"""The clip flags of ``describe`` and ``watch`` (``--fps``, ``--max-frames``,
``--video-max-tokens``) and the ``VideoOptions`` / ``Sampling`` they give."""

from __future__ import annotations

import argparse

from vlmserve.errors import VlmserveError
from vlmserve.video.options import QWEN_FPS, Sampling, VideoOptions


def add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video clips (.mp4, .mkv, .webm, .avi, .mov ...)")
    g.add_argument("--fps", type=float, default=QWEN_FPS,
                   help="frames sampled a second (default 2, Qwen3-VL's)")
    g.add_argument("--max-frames", type=int, default=VideoOptions().max_frames,
                   help="most frames sampled from a clip (default %(default)s)")
    g.add_argument("--video-max-tokens", type=int, default=VideoOptions().max_tokens,
                   help="vision tokens of a whole clip; frames are made smaller to fit "
                   "(default %(default)s)")


def video_sampling(args: argparse.Namespace) -> tuple[VideoOptions, Sampling]:
    """The flags as options and sampling; a one-line error naming the flag if invalid."""
    try:
        options = VideoOptions(fps=args.fps, max_frames=max(args.max_frames, 1),
                               min_frames=min(VideoOptions().min_frames, max(args.max_frames, 1)),
                               max_tokens=args.video_max_tokens)
        return options, options.sampling(max_frames=args.max_frames)
    except VlmserveError as exc:
        raise VlmserveError(f"--fps / --max-frames / --video-max-tokens: {exc.message}"
                            ) from None

"""Qwen3-VL's video arithmetic, repeated exactly: which frames, which times, which size."""

from __future__ import annotations

import numpy as np
import pytest

from vlmserve.errors import RequestError
from vlmserve.video.options import VideoOptions
from vlmserve.video.resize import clip_pixel_bounds, video_frame_size
from vlmserve.video.sampling import padded, pair_timestamps, sample_indices


def qwen_indices(total: int, source_fps: float, fps: float, lo: int, hi: int) -> list[int]:
    """Qwen3VLVideoProcessor.sample_frames, restated from its definition."""
    n = min(max(int(total / source_fps * fps), lo), hi, total)
    return np.linspace(0, total - 1, n).round().astype(int).tolist()


@pytest.mark.parametrize("total,source_fps,fps", [
    (25, 10, 2), (300, 30, 2), (301, 29.97, 2), (7, 24, 2), (1000, 25, 0.5), (3, 30, 2)])
def test_indices_follow_qwen(total, source_fps, fps):
    got = sample_indices(total, source_fps, fps, 4, 64)
    assert got == qwen_indices(total, source_fps, fps, 4, 64)
    assert got == sorted(got) and got[0] == 0 and got[-1] == total - 1
    assert len(got) == min(max(int(total / source_fps * fps), 4), 64, total)


def test_ten_seconds_at_two_fps_is_twenty_frames_ten_pairs():
    indices = sample_indices(300, 30.0, 2.0, 4, 64)
    assert len(indices) == 20
    stamps = pair_timestamps(indices, 30.0)
    assert len(stamps) == 10
    # A pair's time is the mean of its two frames' times.
    assert stamps[0] == pytest.approx((indices[0] + indices[1]) / 2 / 30.0)
    assert indices[-2:] == [283, 299]  # linspace(0, 299, 20), rounded
    assert f"<{stamps[-1]:.1f} seconds>" == "<9.7 seconds>"  # (283 + 299) / 2 / 30


def test_odd_count_repeats_the_last_frame():
    assert padded([0, 6, 12, 18, 24]) == [0, 6, 12, 18, 24, 24]
    assert padded([0, 5]) == [0, 5]
    # The last pair is (24, 24): its time is frame 24's own.
    assert pair_timestamps([0, 6, 12, 18, 24], 10.0) == pytest.approx([0.3, 1.5, 2.4])


def test_frame_size_is_a_multiple_of_32_within_the_token_budget():
    for frames, w, h, budget in [(20, 1920, 1080, 2048), (64, 640, 480, 512), (4, 64, 64, 2048),
                                 (2, 4000, 3000, 4096)]:
        lo, hi = clip_pixel_bounds(budget, 128 * 32 * 32)
        fw, fh = video_frame_size(frames, w, h, min_pixels=lo, max_pixels=hi)
        assert fw % 32 == 0 and fh % 32 == 0
        tokens = -(-frames // 2) * (fw // 32) * (fh // 32)
        assert tokens <= budget
        assert abs(fw / fh - w / h) < 0.35 * (w / h)  # the aspect ratio is kept roughly


def test_request_sampling_is_narrowed_never_widened():
    options = VideoOptions(max_frames=32)
    assert options.sampling().fps == 2.0
    assert options.sampling(fps=1.0, max_frames=8).max_frames == 8
    with pytest.raises(RequestError, match="max_frames"):
        options.sampling(max_frames=33)
    with pytest.raises(RequestError, match="fps"):
        options.sampling(fps=0)
    with pytest.raises(RequestError, match="fps"):
        options.sampling(fps=100)

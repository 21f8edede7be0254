"""Clips made with PyAV -> ``PreparedClip``: frames, timestamps, identity, and refusals."""

from __future__ import annotations

import pytest

from tests.video.clips import empty_clip, unknown_codec_clip, write_clip
from vlmserve.errors import VideoError, VideoTooLargeError
from vlmserve.video import VideoOptions, load_clip_file, prepare_clip


def test_frames_and_timestamps_of_a_clip():
    # 2.5 s at 10 fps: int(25 / 10 * 2) = 5 frames (0, 6, 12, 18, 24), padded to 6.
    clip = prepare_clip(write_clip(n_frames=25, rate=10))
    assert clip.source_frames == 5
    assert len(clip.frames) == 6 and clip.n_pairs == 3
    assert clip.timestamps == pytest.approx((0.3, 1.5, 2.4))
    assert [clip.pair_label(i) for i in range(3)] == ["<0.3 seconds>", "<1.5 seconds>",
                                                       "<2.4 seconds>"]
    assert clip.frames[-1].content_hash == clip.frames[-2].content_hash  # the repeat
    assert len({f.content_hash for f in clip.frames}) == 5  # real frames all differ
    assert clip.width % 32 == 0 and clip.height % 32 == 0
    assert clip.duration_s == pytest.approx(2.5, abs=0.2)


def test_the_same_clip_is_the_same_content_and_other_sampling_is_not():
    data = write_clip(n_frames=40, rate=10)
    a, b = prepare_clip(data), prepare_clip(data)
    assert a.content_hash == b.content_hash and a == b
    slower = prepare_clip(data, VideoOptions(), VideoOptions().sampling(fps=1.0))
    assert slower.content_hash != a.content_hash
    assert len(slower.frames) < len(a.frames)


def test_max_frames_caps_the_sample():
    clip = prepare_clip(write_clip(n_frames=100, rate=10), VideoOptions(),
                        VideoOptions().sampling(max_frames=6))
    assert clip.source_frames == 6 and clip.n_pairs == 3


def test_a_file_on_disk(tmp_path):
    path = tmp_path / "clip.mkv"
    write_clip(path, fmt="matroska", codec="mpeg4")
    assert load_clip_file(path).n_pairs == 3


@pytest.mark.parametrize("data,error,match", [
    (b"this is not a video at all", VideoError, "not a readable video"),
    (b"", VideoError, "empty"),
    (empty_clip(), VideoError, "no frames"),
    (unknown_codec_clip(), VideoError, "codec is unknown"),
])
def test_bad_clips_are_refused_in_one_line(data, error, match):
    with pytest.raises(error, match=match) as info:
        prepare_clip(data)
    assert "\n" not in info.value.message


def test_too_long_and_too_big():
    data = write_clip(n_frames=40, rate=10)  # 4 s
    with pytest.raises(VideoTooLargeError, match="4 s long, over the limit of 2 s"):
        prepare_clip(data, VideoOptions(max_seconds=2))
    with pytest.raises(VideoTooLargeError, match="over the limit"):
        prepare_clip(data, VideoOptions(max_bytes=len(data) - 1))
    with pytest.raises(VideoTooLargeError, match="megapixels"):
        prepare_clip(data, VideoOptions(max_frame_pixels=32 * 32))


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4: file not found"):
        load_clip_file(tmp_path / "nope.mp4")


def test_the_frame_size_is_qwen_s_rule_for_the_sampled_count():
    # 7 frames of 320x176 in a 64-token clip budget: the rule's own answer, resized once.
    from vlmserve.video.options import QWEN_MIN_PIXELS
    from vlmserve.video.resize import clip_pixel_bounds, video_frame_size

    options = VideoOptions(max_tokens=64)
    clip = prepare_clip(write_clip(n_frames=35, rate=10, width=320, height=176), options)
    assert clip.source_frames == 7 and len(clip.frames) == 8
    lo, hi = clip_pixel_bounds(64, QWEN_MIN_PIXELS)
    assert (clip.width, clip.height) == video_frame_size(7, 320, 176, min_pixels=lo,
                                                         max_pixels=hi)
    assert clip.n_pairs * (clip.width // 32) * (clip.height // 32) <= 64

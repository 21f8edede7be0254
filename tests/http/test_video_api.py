"""``video_url`` parts through the real server and the openai SDK: frames, tokens, caches, errors."""

from __future__ import annotations

import base64

import openai
import pytest
from tests.video.clips import empty_clip, unknown_codec_clip, write_clip

from live_server import LiveServer


def video_uri(data: bytes, media: str = "video/mp4") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def clip_message(url: str, text: str = "What happens in this clip?", **extra) -> dict:
    return {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url, **extra}},
                                        {"type": "text", "text": text}]}


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--parallel", "2", "--ctx-size", "4096", "--no-ui",
                        "--video-max-seconds", "8", "--video-max-mb", "1")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


CLIP = video_uri(write_clip(n_frames=25, rate=10))  # 2.5 s: 5 frames, 3 pairs


def test_a_clip_question_reports_frames_timestamps_and_tokens(client):
    answer = client.chat.completions.create(model="m", messages=[clip_message(CLIP)],
                                            max_tokens=6, temperature=0)
    ext = answer.x_vlmserve
    (video,) = ext["videos"]
    assert video["frames"] == 5 and video["frames_sent"] == 6 and video["pairs"] == 3
    assert video["timestamps"] == pytest.approx([0.3, 1.5, 2.4])
    w, h = video["size"]
    assert ext["images"] == 3 and ext["image_tokens"] == 3 * (w // 32) * (h // 32)
    assert answer.usage.prompt_tokens > ext["image_tokens"] + 3 * 2  # + markers, times, text


def test_the_same_clip_twice_hits_the_cache_and_a_follow_up_reuses_its_kv(client):
    first = client.chat.completions.create(
        model="m", max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": "You watch cameras."}, clip_message(CLIP)])
    # Another system prompt: the clip's KV prefix cannot be reused, its embeddings can.
    again = client.chat.completions.create(
        model="m", max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": "You are terse."}, clip_message(CLIP)])
    assert again.x_vlmserve["image_cache_hits"] == 3
    assert again.x_vlmserve["image_encode_ms"] == 0.0
    follow = client.chat.completions.create(
        model="m", max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": "You are terse."}, clip_message(CLIP),
                  {"role": "assistant", "content": again.choices[0].message.content},
                  {"role": "user", "content": "And then?"}])
    assert follow.usage.prompt_tokens_details.cached_tokens >= first.x_vlmserve["image_tokens"]


def test_fps_and_max_frames_are_honoured(client):
    answer = client.chat.completions.create(
        model="m", max_tokens=2, temperature=0,
        messages=[clip_message(CLIP, fps=1.0, max_frames=2)])
    assert answer.x_vlmserve["videos"][0]["frames"] == 2


@pytest.mark.parametrize("url,status,code", [
    (video_uri(b"certainly not a video"), 400, "invalid_video"),
    (video_uri(empty_clip(), "video/x-matroska"), 400, "invalid_video"),
    (video_uri(unknown_codec_clip(), "video/x-msvideo"), 400, "invalid_video"),
    (video_uri(write_clip(n_frames=100, rate=10)), 413, "video_too_large"),  # 10 s > 8 s
    (video_uri(write_clip(n_frames=5), "image/png"), 400, "invalid_video"),  # not video/*
    ("file:///etc/passwd", 400, "invalid_video"),
])
def test_bad_clips_are_4xx_with_a_json_error(client, url, status, code):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[clip_message(url)], max_tokens=2)
    assert info.value.status_code == status
    error = info.value.response.json()["error"]
    assert error["code"] == code and "\n" not in error["message"]


def test_bad_sampling_is_a_400(client):
    for extra in ({"fps": 0}, {"fps": 500}, {"max_frames": 0}, {"max_frames": 10_000}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[clip_message(CLIP, **extra)],
                                           max_tokens=2)


def test_a_clip_over_the_byte_limit_is_a_413(client):
    big = video_uri(write_clip(n_frames=60, rate=30, width=256, height=256) + b"\0" * 1_100_000)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[clip_message(big)], max_tokens=2)
    assert info.value.status_code == 413

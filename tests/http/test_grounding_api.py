"""Image-token budgets and grounding boxes over the API (tiny random model: the answers
are gibberish, so boxes are checked for shape; their arithmetic is tests/unit's)."""

from __future__ import annotations

import openai
import pytest
from tests.unit.test_smart_resize import reference_tokens

from live_server import LiveServer, png_data_uri

PHOTO = png_data_uri(1600, 1200)  # 1024 x 768 after the edge cap


def ask(client: openai.OpenAI, url: str = PHOTO, detail: str | None = None, **extra):
    image_url = {"url": url} | ({"detail": detail} if detail else {})
    return client.chat.completions.create(
        model="m", max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": image_url},
                                               {"type": "text", "text": "where is it?"}]}],
        extra_body=extra or None)


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--parallel", "1", "--ctx-size", "4096", "--context-budget", "4096",
                        "--no-ui")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


def test_detail_low_gives_fewer_image_tokens_than_high(client):
    low = ask(client, detail="low").x_vlmserve["image_tokens"]
    high = ask(client, detail="high").x_vlmserve["image_tokens"]
    auto = ask(client).x_vlmserve["image_tokens"]
    assert low == reference_tokens(1024, 768, 64, 256) < high == auto == 768


def test_per_request_token_bounds_and_their_errors(client):
    small = ask(client, x_image_max_tokens=128).x_vlmserve["image_tokens"]
    assert small == reference_tokens(1024, 768, 64, 128) <= 128
    for extra in ({"x_image_max_tokens": 4096}, {"x_image_min_tokens": 16},
                  {"x_image_min_tokens": 900, "x_image_max_tokens": 300}):
        with pytest.raises(openai.BadRequestError, match="image m.._tokens|exceed"):
            ask(client, **extra)
    with pytest.raises(openai.BadRequestError):
        ask(client, detail="ultra")


def test_strip_over_aspect_ratio_200_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError, match="aspect ratio of 1000:1"):
        ask(client, url=png_data_uri(1, 1000))


def test_x_boxes_raises_the_floor_and_returns_a_boxes_list(client):
    answer = ask(client, url=png_data_uri(300, 200), x_boxes=True)
    x = answer.x_vlmserve
    assert x["image_tokens"] == reference_tokens(300, 200, 1024, 1024)  # floor 1024 (cap)
    assert isinstance(x["boxes"], list)  # gibberish answer: usually []; never an error
    assert x["template"] == "grounding"
    plain = ask(client, url=png_data_uri(300, 200)).x_vlmserve
    assert plain["boxes"] is None and plain["image_tokens"] == reference_tokens(300, 200)


def test_grounding_and_ocr_templates_use_the_floor_too(client):
    for name in ("grounding", "ocr"):
        x = ask(client, url=png_data_uri(300, 200), template=name).x_vlmserve
        assert x["image_tokens"] == reference_tokens(300, 200, 1024, 1024)
        assert (x["boxes"] is not None) == (name == "grounding")


def test_streamed_grounding_answer_carries_boxes_in_the_final_chunk(client):
    stream = client.chat.completions.create(
        model="m", max_tokens=24, temperature=0, stream=True,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_data_uri(300, 200)}}]}],
        extra_body={"template": "grounding"})
    chunks = list(stream)
    final = [c for c in chunks if getattr(c, "x_vlmserve", None)]
    assert len(final) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[")  # the template's grammar: Qwen's box list
    boxes = final[0].x_vlmserve["boxes"]
    assert isinstance(boxes, list)
    for box in boxes:  # mapped onto the 300 x 200 photo
        x1, y1, x2, y2 = box["bbox"]
        assert 0 <= x1 <= x2 <= 300 and 0 <= y1 <= y2 <= 200

"""A restarted server asked about a known picture skips the vision encoder (--image-cache-dir)."""

from __future__ import annotations

import openai

from live_server import metric_value, png_data_uri


def ask(url: str, image: str) -> dict:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
    response = client.chat.completions.create(
        model="qwen3-vl", max_tokens=8, temperature=0, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": "请用中文描述这张图片"}]}])
    return {"text": response.choices[0].message.content,
            **response.model_extra["x_vlmserve"]}


def test_restarted_server_serves_a_known_picture_from_disk(start_server, tmp_path):
    image = png_data_uri(512, 384, color=(10, 120, 200))
    flags = ("--image-cache-dir", str(tmp_path / "embd"), "--parallel", "1")
    first = start_server(*flags)
    cold = ask(first.url, image)
    assert cold["image_disk_hits"] == 0 and cold["image_encode_ms"] > 0
    assert first.stop() == 0

    second = start_server(*flags)
    warm = ask(second.url, image)
    assert warm["image_disk_hits"] == 1 and warm["image_encode_ms"] == 0
    assert warm["text"] == cold["text"]
    metrics = second.metrics()
    assert metric_value(metrics, "vlmserve_image_disk_hits_total") == 1
    assert metric_value(metrics, "vlmserve_images_encoded_total") == 0

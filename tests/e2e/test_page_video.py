"""A clip uploaded on the page, in a real (headless) browser: asked about, or refused."""

from __future__ import annotations

import re

import pytest
from tests.video.clips import write_clip

pytestmark = pytest.mark.browser


def test_ask_about_a_clip(page, tmp_path) -> None:
    clip = tmp_path / "yard.mp4"
    write_clip(clip, n_frames=25, rate=10)  # 5 frames -> 3 pairs of 192x192: 3 x 36 tokens
    max_tokens = page.locator("#vlm-max-tokens input[type=number]")
    max_tokens.fill("16")
    max_tokens.press("Enter")
    page.locator("#vlm-input input[type=file]").set_input_files(str(clip))
    page.locator("#vlm-input .thumbnail-item, #vlm-input video").first.wait_for()
    page.locator("#vlm-input textarea").fill("What happens in this clip?")
    page.locator("#vlm-input button.submit-button").click()
    stats = page.locator("#vlm-chat .vlm-stats")
    stats.first.wait_for(timeout=60_000)
    line = stats.first.inner_text()
    assert re.search(r"\d+ prompt tokens \(108 image\)", line), line
    assert page.locator("#vlm-status").inner_text().strip() == ""


def test_a_file_that_is_not_a_clip_is_refused_visibly(page, tmp_path) -> None:
    fake = tmp_path / "camera.mp4"
    fake.write_text("this is not a video\n")
    page.locator("#vlm-input input[type=file]").set_input_files(str(fake))
    page.locator("#vlm-input button.submit-button").click()
    page.wait_for_function(
        "() => document.querySelector('#vlm-status').innerText.includes('camera.mp4')")
    assert "camera.mp4: not a readable video" in page.locator("#vlm-status").inner_text()
    assert page.locator("#vlm-chat .vlm-stats").count() == 0

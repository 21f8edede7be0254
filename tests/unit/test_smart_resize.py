"""Qwen's smart_resize rule and the per-request token budget (no model needed)."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from tests.unit.test_images import encode
from vlmserve.config import ImageOptions, TokenBudget
from vlmserve.errors import ImageError, RequestError, VlmserveError
from vlmserve.images import prepare_image
from vlmserve.images.budget import GROUNDING_MIN_TOKENS, narrow_budget
from vlmserve.images.smart_resize import AspectRatioError, smart_resize


def reference_tokens(width, height, min_tokens=64, max_tokens=1024, factor=32):
    """The Hugging Face Qwen2-VL / Qwen3-VL image processor's rule, written here from its
    description: round (halves to even) to the factor, then floor under the pixel cap or
    ceil over the floor, scaling both sides by the same beta; refuse ratios over 200."""
    if max(width, height) / min(width, height) > 200:
        raise ValueError("aspect ratio over 200")
    lo, hi = min_tokens * factor ** 2, max_tokens * factor ** 2
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if w * h > hi:
        beta = math.sqrt(height * width / hi)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif w * h < lo:
        beta = math.sqrt(lo / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return (w // factor) * (h // factor)


# (width, height) -> tokens with Qwen3-VL's floor of 64 and a cap of 4096 (mtmd's default),
# worked by hand from the rule; mtmd's own rule gives the number in the comment.
HEADLINE = {
    (50, 50): 64,  # mtmd: 9
    (64, 48): 70,  # mtmd: 12
    (400, 400): 144,  # 12.5 rounds to even: 12 x 12; mtmd: 13 x 13 = 169
    (33, 1000): 90,  # 2 x 45; mtmd: 31
    (4000, 3000): 4015,  # 73 x 55
    (768, 768): 576,
    (1024, 768): 768,
    (640, 480): 300,
    (1920, 1080): 2040,  # 60 x 34 (1080 / 32 = 33.75 rounds up)
    (200, 3000): 564,
    (37, 23): 77,
    (3200, 16): 100,  # ratio 200: accepted
    (1000, 5): 114,  # ratio 200: accepted, the short side stays one block
}


def tokens_of(width, height, min_tokens=64, max_tokens=4096):
    w, h = smart_resize(width, height, min_pixels=min_tokens * 1024,
                        max_pixels=max_tokens * 1024)
    assert w % 32 == 0 and h % 32 == 0
    return (w // 32) * (h // 32)


@pytest.mark.parametrize(("size", "tokens"), HEADLINE.items())
def test_headline_sizes(size, tokens):
    assert tokens_of(*size) == tokens == reference_tokens(*size, max_tokens=4096)


def test_rule_matches_the_reference_over_many_sizes():
    sizes = [(w, h) for w in range(1, 4000, 97) for h in range(1, 4000, 89)]
    sizes += [(w, h) for w in (16, 31, 32, 33, 48, 80, 400, 1040) for h in range(16, 600, 7)]
    for lo, hi in ((64, 1024), (64, 4096), (1024, 1024), (8, 256), (256, 16384)):
        for w, h in sizes:
            if max(w, h) / min(w, h) > 200:
                continue
            assert tokens_of(w, h, lo, hi) == reference_tokens(w, h, lo, hi), (w, h, lo, hi)


@pytest.mark.parametrize("size", [(1, 1000), (1000, 1), (10, 2001), (5000, 3)])
def test_strips_over_aspect_ratio_200_are_refused(size):
    with pytest.raises(AspectRatioError, match="aspect ratio of .* over Qwen-VL's limit of 200"):
        smart_resize(*size, min_pixels=65536, max_pixels=1048576)
    data = encode(Image.new("L", size, 9), "PNG")
    with pytest.raises(ImageError, match="limit of 200:1"):  # refused before decoding
        prepare_image(data)


def test_prepared_images_have_the_rule_s_size():
    options = ImageOptions(max_edge=8192, tokens=TokenBudget(64, 4096))
    for (w, h), tokens in HEADLINE.items():
        if w * h > 4_000_000:
            continue  # the engine test covers 4000 x 3000
        p = prepare_image(encode(Image.new("RGB", (w, h), (9, 99, 199)), "PNG"), options)
        assert (p.width // 32) * (p.height // 32) == tokens
        assert p.width % 32 == 0 and p.height % 32 == 0


def test_detail_low_gets_fewer_tokens_than_high():
    server = TokenBudget(64, 1024)
    data = encode(Image.new("RGB", (1600, 1200), (1, 2, 3)), "JPEG")
    options = ImageOptions(tokens=server)
    low = prepare_image(data, options, tokens=narrow_budget(server, detail="low"))
    high = prepare_image(data, options, tokens=narrow_budget(server, detail="high"))
    auto = prepare_image(data, options, tokens=narrow_budget(server, detail="auto"))
    n = {k: (p.width // 32) * (p.height // 32) for k, p in
         (("low", low), ("high", high), ("auto", auto))}
    assert n["low"] <= 256 < n["high"] == n["auto"] == 768


def test_budget_narrowing_stays_within_the_server_s_bounds():
    server = TokenBudget(64, 2048)
    assert narrow_budget(server) == server
    assert narrow_budget(server, detail="low") == TokenBudget(64, 256)
    assert narrow_budget(server, min_tokens=512, max_tokens=1024) == TokenBudget(512, 1024)
    assert narrow_budget(server, floor=GROUNDING_MIN_TOKENS) == TokenBudget(1024, 2048)
    # A task's floor never passes the cap: with a 512 cap, grounding gets 512.
    assert narrow_budget(TokenBudget(64, 512), floor=1024) == TokenBudget(512, 512)
    # detail low with a grounding floor: the floor wins the cap.
    assert narrow_budget(server, detail="low", floor=1024) == TokenBudget(256, 256)
    for bad in ({"min_tokens": 32}, {"max_tokens": 4096}, {"min_tokens": 0},
                {"min_tokens": 1024, "max_tokens": 512}):
        with pytest.raises(RequestError):
            narrow_budget(server, **bad)
    with pytest.raises(RequestError, match="detail must be one of auto, low, high"):
        narrow_budget(server, detail="ultra")


@pytest.mark.parametrize(("lo", "hi"), [(4, 1024), (64, 32), (2048, 1024), (64, 100_000)])
def test_bad_server_budgets_are_refused(lo, hi):
    with pytest.raises(VlmserveError, match="image m.. tokens"):
        TokenBudget(lo, hi)


def test_the_edge_cap_keeps_the_aspect_ratio_the_rule_sees():
    # 3200 x 16 is ratio 200 exactly; capped to 1024 px it must not become 1024 x 5
    # (ratio 204.8, refused): the capped size stays exact, 1024 x 5.12.
    p = prepare_image(encode(Image.new("L", (3200, 16), 9), "PNG"))
    assert (p.width, p.height) == (3648, 32)  # Qwen's 64-token floor widens the strip
    # With the cap, a big photo is the rule applied to the capped size.
    p = prepare_image(encode(Image.new("RGB", (4000, 3000), (1, 2, 3)), "JPEG"))
    assert (p.width // 32) * (p.height // 32) == reference_tokens(1024, 768) == 768

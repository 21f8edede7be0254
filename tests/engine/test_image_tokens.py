"""What mtmd really produces for images vlmserve prepared: exactly Qwen's smart_resize.

vlmserve resizes every picture with Qwen's rule; mtmd must then keep it as it is. The
engine reports the image tokens of mtmd's chunks, so these tests compare the rule with
what the vision tower was actually given, on the tiny model.
"""

from __future__ import annotations

import pytest
from PIL import Image

from tests.engine.conftest import make_engine, run
from tests.unit.test_images import encode
from tests.unit.test_smart_resize import HEADLINE, reference_tokens
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.config import ImageOptions, TokenBudget
from vlmserve.images import prepare_image
from vlmserve.images.budget import narrow_budget

OPTIONS = ImageOptions(max_edge=8192, tokens=TokenBudget(64, 4096))


@pytest.fixture(scope="module")
def big_engine(tiny_model):
    client = make_engine(tiny_model, n_ctx_per_slot=8192, n_parallel=1)
    yield client
    client.close()


def mtmd_tokens(engine, data: bytes, options=OPTIONS, tokens=None) -> int:
    image = prepare_image(data, options, tokens=tokens)
    prompt = ChatRenderer(engine.info.chat_template).render([ChatMessage.user("?", image)])
    _, end = run(engine, prompt, max_tokens=1)
    assert end.error is None, end.error
    return end.stats.image_tokens


@pytest.mark.parametrize(("size", "tokens"), HEADLINE.items())
def test_mtmd_tokens_equal_qwen_s_rule(big_engine, size, tokens):
    data = encode(Image.new("RGB", size, (200, 120, 40)), "JPEG")
    assert mtmd_tokens(big_engine, data) == tokens == reference_tokens(*size, max_tokens=4096)


def test_detail_and_grounding_floor_reach_mtmd(big_engine):
    data = encode(Image.new("RGB", (1600, 1200), (20, 120, 40)), "JPEG")
    server = TokenBudget(64, 1024)
    options = ImageOptions(tokens=server)
    low = mtmd_tokens(big_engine, data, options, narrow_budget(server, detail="low"))
    high = mtmd_tokens(big_engine, data, options, narrow_budget(server, detail="high"))
    assert low < high
    # 1024 x 768 after the edge cap; low: 18 x 13 under its 256-token cap
    assert (low, high) == (reference_tokens(1024, 768, 64, 256), 768) == (234, 768)
    small = encode(Image.new("RGB", (300, 200), (20, 120, 40)), "PNG")
    grounded = mtmd_tokens(big_engine, small, options, narrow_budget(server, floor=1024))
    assert grounded == reference_tokens(300, 200, 1024, 1024) >= 960

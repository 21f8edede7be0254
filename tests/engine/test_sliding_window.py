"""The sliding window measured with the tiny model's real tokenizer and image-token rule.

Each test runs twice: on the small trained demo vocabulary and on Qwen's real 151,936-token
vocabulary, whose Chinese token counts are the ones a real model sees.
"""

from __future__ import annotations

import pytest

from tests.conftest import png_bytes
from tests.engine.conftest import run
from vlmserve.chat import ChatMessage, ChatRenderer, fit_to_budget
from vlmserve.errors import ContextOverflowError
from vlmserve.images import prepare_image

BUDGET = 1024


@pytest.fixture(scope="module", params=["demo-vocab", "qwen-vocab"])
def engine(request, engine):
    """The conftest's tiny-model engine, or the same shape of engine on the Qwen vocabulary."""
    return engine if request.param == "demo-vocab" else request.getfixturevalue("qwen_engine")


def chat_of(turns: int, image_every: int = 0) -> list[ChatMessage]:
    msgs = [ChatMessage.system("你是一个有帮助的助手。You describe pictures precisely.")]
    for i in range(turns):
        images = ()
        if image_every and i % image_every == 0:
            images = (prepare_image(png_bytes(256, 192, seed=i)),)  # 48 image tokens each
        msgs.append(ChatMessage.user(f"第{i}个问题：图片里的第{i}个物体是什么颜色？", *images))
        msgs.append(ChatMessage.assistant(f"Answer {i}: the object is red, 红色的。" * 3))
    msgs.append(ChatMessage.user("最后一个问题：请用中文描述这张图片"))
    return msgs


@pytest.fixture(scope="module")
def counter(engine):
    renderer = ChatRenderer(engine.info.chat_template)
    return renderer, renderer.token_counter(engine.count_prompt_tokens)


def test_thirty_turn_chat_fits_keeps_system_and_newest_and_reports_drops(engine, counter):
    renderer, count = counter
    messages = chat_of(30, image_every=7)
    assert count(messages) > BUDGET  # the test is meaningful
    result = fit_to_budget(messages, BUDGET, count)
    assert result.prompt_tokens <= BUDGET
    assert result.messages[0] == messages[0]  # system prompt kept
    assert result.messages[-1] == messages[-1]  # newest turn kept
    assert result.dropped_turns > 0
    kept_users = [m for m in result.messages if m.role == "user"]
    assert len(kept_users) == 30 + 1 - result.dropped_turns
    assert result.dropped_images == 5 - sum(len(m.images) for m in result.messages)
    # what the engine actually puts into KV is what the window measured
    _, end = run(engine, renderer.render(result.messages), max_tokens=1, request_id="win")
    assert end.stats.prompt_tokens == result.prompt_tokens <= BUDGET


def test_window_slides_turn_by_turn_without_exceeding_the_budget(engine, counter):
    _, count = counter
    for turns in range(1, 31, 3):
        result = fit_to_budget(chat_of(turns), BUDGET, count)
        assert result.prompt_tokens <= BUDGET
        assert result.prompt_tokens == count(result.messages)


def test_only_image_survives_when_its_turn_is_dropped(engine, counter):
    _, count = counter
    messages = chat_of(30, image_every=100)  # one image, in the oldest turn
    result = fit_to_budget(messages, BUDGET, count)
    assert result.dropped_turns > 0 and result.dropped_images == 0
    assert sum(len(m.images) for m in result.messages) == 1


def test_newest_turn_alone_too_big_is_a_clear_error(engine, counter):
    _, count = counter
    huge = [ChatMessage.user("看" * 3000)]
    with pytest.raises(ContextOverflowError):
        fit_to_budget(huge, BUDGET, count)

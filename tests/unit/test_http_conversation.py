"""Composing a conversation from session history, new messages and a template."""

from __future__ import annotations

from vlmserve.chat import ChatMessage
from vlmserve.http.conversation import compose, prompt_budget
from vlmserve.templates import TemplateRegistry
from vlmserve.types import PreparedImage

IMAGE = PreparedImage.from_rgb(b"\x00" * 12, 2, 2)


def test_history_comes_first_and_new_system_replaces_stored() -> None:
    history = [ChatMessage.system("old"), ChatMessage.user("q1", IMAGE),
               ChatMessage.assistant("a1")]
    new = [ChatMessage.system("new"), ChatMessage.user("q2")]
    assert [m.text for m in compose(history, new)] == ["new", "q1", "a1", "q2"]
    assert [m.text for m in compose(history, new[1:])] == ["old", "q1", "a1", "q2"]


def test_template_adds_system_once_and_question_to_a_bare_image() -> None:
    template = TemplateRegistry.builtin().get("describe_zh").model_copy(
        update={"system": "be brief"})
    messages = compose([], [ChatMessage.user("", IMAGE)], template)
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].text == template.prompt and messages[1].images == (IMAGE,)
    again = compose(messages + [ChatMessage.assistant("a")], [ChatMessage.user("more")],
                    template)
    assert [m.text for m in again].count("be brief") == 1
    assert again[-1].text == "more"  # a question of the user's own is kept as is


def test_prompt_budget_keeps_half_the_window() -> None:
    assert prompt_budget(4096, 8192, 512) == 4096 - 512
    assert prompt_budget(4096, 2048, 512) == 2048 - 512  # the slot is smaller
    assert prompt_budget(4096, 8192, 100_000) == 2048  # a huge max_tokens

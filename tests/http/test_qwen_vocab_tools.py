"""Tool calls and logprobs on the tiny model with Qwen's real vocabulary (151,936 tokens).

There ``<tool_call>`` is one token of its own, as in the published GGUF, and a random
model emits bytes of multi-byte characters: a forced call must still parse, and each
token's first top logprob must still be the greedy token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from live_server import LiveServer

TOOL = {"type": "function", "function": {"name": "locate", "parameters": {
    "type": "object", "properties": {"label": {"type": "string", "maxLength": 8},
                                     "x": {"type": "integer"}},
    "required": ["label", "x"]}}}
MESSAGES = [{"role": "user", "content": "请列出图片中的主要物体和它们的位置。"}]


@pytest.fixture(scope="module")
def client(qwen_model, tmp_path_factory) -> Iterator[openai.OpenAI]:
    log = tmp_path_factory.mktemp("qwen-tools") / "server.log"
    live = LiveServer(qwen_model.model, qwen_model.mmproj, log, "--parallel", "1",
                      "--ctx-size", "2048").wait_ready()
    yield openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=120)
    assert live.stop() == 0, live.log()
    assert "Traceback" not in live.log(None), live.log(None)


def test_forced_call_parses_with_the_real_vocabulary(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=[TOOL], max_tokens=200, temperature=0,
        tool_choice={"type": "function", "function": {"name": "locate"}})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    arguments = json.loads(choice.message.tool_calls[0].function.arguments)
    assert set(arguments) == {"label", "x"} and isinstance(arguments["x"], int)


def test_top_logprob_is_the_greedy_token_with_the_real_vocabulary(client: openai.OpenAI,
                                                                  ) -> None:
    answer = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8,
                                            temperature=0, logprobs=True, top_logprobs=3)
    entries = answer.choices[0].logprobs.content
    assert entries
    for entry in entries:
        assert entry.top_logprobs[0].bytes == entry.bytes
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)

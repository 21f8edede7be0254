"""Qwen3-VL's recommended sampling as the defaults, and the penalties' bounds."""

from __future__ import annotations

import pytest

from vlmserve.errors import RequestError
from vlmserve.http.completions import sampling_for
from vlmserve.http.schemas import ChatCompletionRequest
from vlmserve.settings import ServerSettings
from vlmserve.types import SamplingParams

MESSAGES = [{"role": "user", "content": "hi"}]


def params(settings=None, **body) -> SamplingParams:
    return sampling_for(ChatCompletionRequest(messages=MESSAGES, **body), 16, None, settings)


def test_defaults_are_qwen_s_recommendation():
    p = params()
    assert (p.temperature, p.top_p, p.top_k, p.presence_penalty, p.frequency_penalty) == (
        0.7, 0.8, 20, 1.5, 0.0)
    assert p.penalized


def test_greedy_requests_get_no_default_penalty_but_may_ask_for_one():
    assert params(temperature=0).presence_penalty == 0.0
    assert not params(temperature=0).penalized
    assert params(temperature=0, presence_penalty=0.5).presence_penalty == 0.5


def test_request_values_and_server_flags_override_the_defaults():
    assert params(presence_penalty=0.0, frequency_penalty=0.3).presence_penalty == 0.0
    assert params(frequency_penalty=0.3).frequency_penalty == 0.3
    server = ServerSettings.load(presence_penalty=0.25, frequency_penalty=0.5)
    p = params(server)
    assert (p.presence_penalty, p.frequency_penalty) == (0.25, 0.5)


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [-2.5, 2.01, 7])
def test_out_of_range_penalties_are_refused(name, value):
    with pytest.raises(RequestError, match=f"{name} must be in"):
        SamplingParams(**{name: value})

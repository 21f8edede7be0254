"""Phase reports before the first token, over the fake backend (the real loop and vision stage).

A request that asks (``Request.report_phases``) hears queued (with its place in line),
encoding its picture and reading its prompt, each once, in order, all before its first
text; a request that does not ask gets exactly the stream it always got.
"""

from __future__ import annotations

import queue
import threading

import pytest

from tests.unit.fake_backend import FakeBackend
from tests.unit.test_engine_loop import Harness, image_prompt
from vlmserve.types import Phase, Prompt, Request, SamplingParams, TokenDelta


@pytest.fixture
def harnesses():
    made: list[Harness] = []

    def make(backend: FakeBackend) -> Harness:
        made.append(Harness(backend))
        return made[-1]

    yield make
    for h in made:
        h.close()


def submit(h, rid: str, prompt: Prompt, max_tokens: int = 6, phases: bool = True
           ) -> queue.Queue[TokenDelta]:
    q: queue.Queue[TokenDelta] = queue.Queue()
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    h.loop.submit(Request(rid, prompt, sampling, report_phases=phases), q.put)
    return q


def drain(q: queue.Queue[TokenDelta], timeout: float = 20) -> list[TokenDelta]:
    out: list[TokenDelta] = []
    while not (out and out[-1].finished):
        out.append(q.get(timeout=timeout))
    return out


def phases_of(deltas: list[TokenDelta]) -> list[tuple[Phase, int]]:
    return [(d.phase.phase, d.phase.position) for d in deltas if d.phase is not None]


def assert_phases_come_first(deltas: list[TokenDelta]) -> None:
    first_text = next(i for i, d in enumerate(deltas) if d.text or d.finished)
    assert all(d.phase is None for d in deltas[first_text:])
    assert all(not d.text and not d.token_ids for d in deltas if d.phase is not None)


def test_a_new_picture_reports_encoding_then_reading_then_tokens(harnesses):
    backend = FakeBackend(n_parallel=1)
    h = harnesses(backend)
    prompt = image_prompt(seed=11)
    backend.gates[prompt.images[0].content_hash] = gate = threading.Event()
    q = submit(h, "pic", prompt)
    first = q.get(timeout=10)  # while the encoder is held
    assert first.phase is not None and first.phase.phase is Phase.ENCODING
    gate.set()
    deltas = [first, *drain(q)]
    assert phases_of(deltas) == [(Phase.ENCODING, 0), (Phase.PREFILL, 0)]
    assert_phases_come_first(deltas)
    elapsed = [d.phase.elapsed_ms for d in deltas if d.phase is not None]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    assert deltas[-1].stats.completion_tokens == 6


def test_queued_requests_hear_their_place_in_line_move_up(harnesses):
    backend = FakeBackend(n_parallel=1, decode_s=0.005)
    h = harnesses(backend)
    busy = submit(h, "busy", Prompt(("a long answer",)), max_tokens=4000, phases=False)
    assert backend.decoding.wait(10)  # the only slot is taken, for a long while
    second = submit(h, "second", Prompt(("question two",)))
    assert second.get(timeout=10).phase.position == 1
    third = submit(h, "third", Prompt(("question three",)))
    assert third.get(timeout=10).phase.position == 2
    h.loop.abort("busy")
    busy_deltas = drain(busy)
    second_deltas, third_deltas = drain(second), drain(third)
    assert all(d.phase is None for d in busy_deltas)  # it did not ask
    assert phases_of(second_deltas) == [(Phase.PREFILL, 0)]  # (queued 1 was read above)
    assert phases_of(third_deltas) == [(Phase.QUEUED, 1), (Phase.PREFILL, 0)]
    for deltas in (second_deltas, third_deltas):
        assert_phases_come_first(deltas)


def test_without_asking_the_stream_is_unchanged(harnesses):
    backend = FakeBackend(n_parallel=1)
    h = harnesses(backend)
    prompt = image_prompt(seed=12)
    plain = drain(submit(h, "plain", prompt, phases=False))
    asked = drain(submit(h, "asked", image_prompt(seed=13)))
    assert all(d.phase is None for d in plain)
    assert plain[0].text or plain[0].token_ids  # the first delta is still the first token
    assert phases_of(asked)  # the same loop reports to the request that asked

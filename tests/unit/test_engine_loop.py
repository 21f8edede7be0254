"""The engine loop's logic over a fake backend: fairness, image slices, the vision stage.

The loop, the vision stage, the scheduler and the image cache are the real ones; only
llama.cpp is replaced (tests/unit/fake_backend.py). What llama.cpp itself does is
tested in tests/engine/ on the tiny model.
"""

from __future__ import annotations

import io
import queue
import threading
import time

import pytest
from PIL import Image

from tests.unit.fake_backend import FakeBackend, FakeImageChunk
from vlmserve.engine.image_cache import ImageCache
from vlmserve.engine.loop import EngineLoop
from vlmserve.engine.vision import VisionStage
from vlmserve.errors import ImageTooLargeError, RequestError, ShuttingDownError
from vlmserve.images import prepare_image
from vlmserve.types import FinishReason, Prompt, Request, SamplingParams, TokenDelta


class Harness:
    """A started loop over ``backend``; ``send`` submits, ``result`` waits for the end."""

    def __init__(self, backend: FakeBackend, image_slice: int = 64, threaded: bool = True,
                 image_cache_mb: int = 64) -> None:
        self.backend = backend
        inbox: queue.Queue = queue.Queue()
        self.vision = VisionStage(backend, inbox.put, threaded=threaded)
        self.cache = ImageCache(image_cache_mb * 1024 * 1024)
        self.loop = EngineLoop(backend, self.vision, inbox, self.cache, max_queue=16,
                               image_slice=image_slice)
        self.loop.start()
        self.deltas: dict[str, queue.Queue[TokenDelta]] = {}

    def send(self, rid: str, prompt: Prompt, max_tokens: int = 8) -> None:
        self.deltas[rid] = q = queue.Queue()
        self.loop.submit(Request(rid, prompt, SamplingParams(max_tokens=max_tokens,
                                                             temperature=0.0)), q.put)

    def result(self, rid: str, timeout: float = 20) -> tuple[list[int], TokenDelta]:
        ids: list[int] = []
        while True:
            delta = self.deltas[rid].get(timeout=timeout)
            ids.extend(delta.token_ids)
            if delta.finished:
                return ids, delta

    def close(self) -> None:
        assert self.loop.stop()


@pytest.fixture
def harnesses():
    made: list[Harness] = []

    def make(backend: FakeBackend, **kw) -> Harness:
        made.append(Harness(backend, **kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def picture(w: int, h: int, seed: int):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (seed * 37 % 256, seed * 91 % 256, 50)).save(buf, "PNG")
    return prepare_image(buf.getvalue())


def image_prompt(seed: int, w: int = 256, h: int = 160, question: str = "what?") -> Prompt:
    return Prompt(("<s>user ", picture(w, h, seed), f" {question}\n"))


def alone(prompt: Prompt, max_tokens: int = 8, **kw) -> list[int]:
    h = Harness(FakeBackend(n_parallel=1, **kw))
    try:
        h.send("alone", prompt, max_tokens)
        return h.result("alone")[0]
    finally:
        h.close()


def test_every_decoding_slot_advances_every_step_even_past_the_budget(harnesses):
    backend = FakeBackend(n_parallel=6, n_batch=4)
    h = harnesses(backend)
    prompts = [Prompt((f"ab{i}",)) for i in range(6)]  # 3 prompt tokens each
    for i, p in enumerate(prompts):
        h.send(f"r{i}", p, max_tokens=12)
    results = [h.result(f"r{i}")[0] for i in range(6)]
    assert results == [alone(p, 12) for p in prompts]
    # Generated tokens sit at positions >= 3. Between two of a slot's generated tokens,
    # every other slot that was generating before and after gets its token too.
    events = [(seq, pos) for call in backend.token_calls() for seq, pos in call if pos >= 3]
    first = {s: min(i for i, (q, _) in enumerate(events) if q == s) for s in range(6)}
    last = {s: max(i for i, (q, _) in enumerate(events) if q == s) for s in range(6)}
    assert max(first.values()) < min(last.values())  # at some point all six generated
    for seq in range(6):
        mine = [i for i, (q, _) in enumerate(events) if q == seq]
        for a, b in zip(mine, mine[1:], strict=False):
            between = {q for q, _ in events[a + 1:b]}
            expected = {s for s in range(6) if s != seq and first[s] < a and last[s] > b}
            assert expected <= between
    assert all(len(call) <= 4 for call in backend.token_calls())


def test_image_slices_interleave_with_a_running_stream(harnesses):
    backend = FakeBackend(n_parallel=2, n_batch=64, decode_s=0.002)
    h = harnesses(backend, image_slice=8)
    stream = Prompt(("tell me a long story",))
    h.send("stream", stream, max_tokens=300)
    while not any(len(c) == 1 for c in backend.token_calls()):  # the stream is decoding
        time.sleep(0.005)
    newcomer = image_prompt(seed=1, w=320, h=256)  # 10 x 8 = 80 image cells
    h.send("new", newcomer, max_tokens=6)
    new_ids, new_end = h.result("new")
    stream_ids, _ = h.result("stream")
    assert new_end.stats.image_tokens == 80
    embd = [i for i, c in enumerate(backend.calls) if c.kind == "embd"]
    assert [backend.calls[i].items for i in embd] == [[(1, 8)]] * 10
    for a, b in zip(embd, embd[1:], strict=False):  # the stream decoded between slices
        assert any(c.kind == "tokens" and any(seq == 0 for seq, _ in c.items)
                   for c in backend.calls[a + 1:b])
    # sliced == whole: alone, nobody decodes, so the image goes in as one call
    assert new_ids == alone(newcomer, 6)
    assert stream_ids == alone(stream, 300)


def test_tokenize_and_encode_never_run_on_the_engine_thread(harnesses):
    backend = FakeBackend()
    h = harnesses(backend)
    h.send("a", image_prompt(seed=2))
    h.result("a")
    threads = {c.kind: c.thread for c in backend.calls if c.kind in ("tokenize", "encode")}
    assert threads == {"tokenize": "vlmserve-prepare", "encode": "vlmserve-encoder"}


def test_inline_vision_gives_the_same_tokens(harnesses):
    prompt = image_prompt(seed=3)
    h = harnesses(FakeBackend(n_parallel=1), threaded=False)
    h.send("inline", prompt)
    assert h.result("inline")[0] == alone(prompt)


def test_a_request_waiting_for_its_encoder_holds_up_nobody_and_aborts_cleanly(harnesses):
    backend = FakeBackend(n_parallel=2)
    h = harnesses(backend)
    slow = image_prompt(seed=4)
    key = slow.images[0].content_hash
    backend.gates[key] = gate = threading.Event()
    h.send("slow", slow)
    assert backend.encoding.wait(10)
    h.send("text", Prompt(("hello there",)), max_tokens=5)
    ids, end = h.result("text")  # finishes while the encoder is still held
    assert end.finish_reason is FinishReason.LENGTH and len(ids) == 5
    h.loop.abort("slow")
    _, end = h.result("slow", timeout=5)
    assert end.finish_reason is FinishReason.ABORT
    gate.set()  # the encoder returns the lent chunk; the loop frees it
    deadline = time.monotonic() + 10
    while not all(c.freed for c in backend.chunks) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(c.freed for c in backend.chunks)
    assert all(s.freed for s in backend.samplers)
    assert h.loop.busy_slots == 0 and h.loop.queue_depth == 0
    assert not h.loop._orphans and not h.loop._preparing
    assert all(e.refs == 0 for e in h.cache._entries.values())


def test_an_encoder_failure_fails_only_its_own_request(harnesses):
    backend = FakeBackend(n_parallel=2)
    h = harnesses(backend)
    bad, good = image_prompt(seed=5), image_prompt(seed=6)
    backend.fail_keys.add(bad.images[0].content_hash)
    h.send("bad", bad)
    h.send("good", good)
    _, bad_end = h.result("bad")
    good_ids, good_end = h.result("good")
    assert bad_end.finish_reason is FinishReason.ERROR
    assert bad_end.error.message == "fake encoder failure" and bad_end.error.http_status == 500
    assert good_end.finish_reason is FinishReason.LENGTH
    assert good_ids == alone(good)
    assert h.loop.busy_slots == 0


def test_an_error_raised_while_an_image_is_put_in_keeps_its_own_status(harnesses, monkeypatch):
    """The engine hands the VlmserveError itself to the end of the stream (not a 500)."""
    backend = FakeBackend(n_parallel=2)
    h = harnesses(backend)
    at_encode, at_slice = image_prompt(seed=7), image_prompt(seed=8)
    too_large = ImageTooLargeError("fake: this picture is too large for the encoder")
    backend.fail_with[at_encode.images[0].content_hash] = too_large
    refused = RequestError("fake: these positions are refused")
    real_positions = FakeImageChunk.positions

    def positions(chunk: FakeImageChunk, n_past: int):
        if chunk.key == at_slice.images[0].content_hash:
            raise refused
        return real_positions(chunk, n_past)

    monkeypatch.setattr(FakeImageChunk, "positions", positions)
    h.send("encode", at_encode)
    h.send("slice", at_slice)
    _, encode_end = h.result("encode")
    _, slice_end = h.result("slice")
    assert encode_end.finish_reason is FinishReason.ERROR and encode_end.error is too_large
    assert encode_end.error.http_status == 413
    assert slice_end.finish_reason is FinishReason.ERROR and slice_end.error is refused
    assert slice_end.error.http_status == 400
    assert h.loop.busy_slots == 0


def test_a_cached_image_skips_the_encoder_and_gives_the_same_tokens(harnesses):
    backend = FakeBackend(n_parallel=2)
    h = harnesses(backend)
    h.loop.prefix_cache = False  # so the second request needs the embeddings again
    prompt = image_prompt(seed=7)
    h.send("first", prompt)
    first, _ = h.result("first")
    h.send("second", prompt)
    second, end = h.result("second")
    assert end.stats.image_cache_hits == 1 and end.stats.image_encode_ms == 0
    assert first == second == alone(prompt)
    assert sum(1 for c in backend.calls if c.kind == "encode") == 1


def test_close_never_frees_the_backend_under_a_running_decode():
    from vlmserve.engine.client import EngineClient

    backend = FakeBackend(n_parallel=1)
    backend.decode_gate = gate = threading.Event()
    h = Harness(backend)
    client = EngineClient(backend, h.loop)
    h.send("stuck", Prompt(("hello",)))
    assert backend.decoding.wait(10)  # the engine thread is inside "llama_decode"
    client.close(timeout=0.2)
    assert not backend.closed  # freeing now would pull memory from under it
    gate.set()
    client.close(timeout=10)
    assert backend.closed


def test_logprobs_only_for_requests_that_ask_and_one_per_token(harnesses, monkeypatch):
    backend = FakeBackend(n_parallel=2)
    calls: list[str] = []
    real = backend.logprobs

    def counted(batch_index: int, token: int, n_top: int):
        calls.append("x")
        return real(batch_index, token, n_top)

    monkeypatch.setattr(backend, "logprobs", counted)
    h = harnesses(backend)
    h.send("plain", Prompt(("<s>user hello\n",)), max_tokens=6)
    h.result("plain")
    assert calls == []  # nobody asked: nothing computed
    q: queue.Queue = queue.Queue()
    h.loop.submit(Request("asks", Prompt(("<s>user hello\n",)),
                          SamplingParams(max_tokens=6, temperature=0.0, logprobs=3)), q.put)
    ids, entries = [], []
    while True:
        delta = q.get(timeout=20)
        ids.extend(delta.token_ids)
        entries.extend(delta.logprobs)
        if delta.finished:
            break
    assert [e.token for e in entries] == ids and ids
    assert all(len(e.top) == 3 and e.bytes == backend.token_bytes(e.token) for e in entries)


def test_a_request_whose_setup_fails_unexpectedly_ends_with_an_error_not_a_hang(harnesses):
    class BrokenSampler(FakeBackend):
        def new_sampler(self, params):
            raise TypeError("a bug in sampler setup")

    backend = BrokenSampler(n_parallel=1)
    h = harnesses(backend)
    h.send("broken", image_prompt(seed=8))
    _, end = h.result("broken", timeout=10)
    assert end.finish_reason is FinishReason.ERROR and end.error.http_status == 500
    assert all(c.freed for c in backend.chunks)
    assert h.loop.queue_depth == 0 and not h.loop._preparing and not h.loop._waiting


def test_drain_ends_queued_requests_lets_running_ones_go_on_then_ends_them(harnesses):
    """The shutdown drain (scheduler logic only; the real server's SIGTERM is tested in
    tests/http/test_shutdown.py)."""
    backend = FakeBackend(n_parallel=2, decode_s=0.01)
    h = harnesses(backend)
    for i in range(5):
        h.send(f"r{i}", Prompt((f"<s>user q{i}\n",)), max_tokens=100000)
    deadline = time.monotonic() + 10
    while h.loop.busy_slots < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    h.loop.drain()
    time.sleep(0.5)
    running, queued = [], []
    for i in range(5):
        seen = []
        while not h.deltas[f"r{i}"].empty():
            seen.append(h.deltas[f"r{i}"].get_nowait())
        last = next((d for d in seen if d.finished), None)
        if last is None:  # still running: it has a slot
            running.append(i)
            continue
        queued.append(i)
        assert last.finish_reason is FinishReason.ERROR and len(seen) == 1
        assert isinstance(last.error, ShuttingDownError)
    assert len(running) == 2 and len(queued) == 3
    with pytest.raises(ShuttingDownError):
        h.send("late", Prompt(("<s>user late\n",)))
    assert not h.loop.idle
    h.loop.end_running()
    for i in running:
        ids, last = h.result(f"r{i}", timeout=5)
        assert last.finish_reason is FinishReason.ERROR and ids  # it had produced tokens
        assert isinstance(last.error, ShuttingDownError)
    assert h.loop.idle and h.loop.queue_depth == 0

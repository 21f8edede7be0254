"""Clients that leave, a full queue, and shutting down: the slot must always come back."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest

from live_server import LiveServer, metric_value, png_data_uri

IMAGE = png_data_uri(256, 256)
# Long enough to still be running when the client leaves (the tiny model makes several
# hundred tokens a second; the slot's context stops it at 8192 cells at the latest).
LONG = 8000


def body(max_tokens: int, stream: bool = False) -> dict:
    return {"model": "m", "max_tokens": max_tokens, "stream": stream, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}},
                                     {"type": "text", "text": "请用中文描述这张图片"}]}]}


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    # One slot and one waiting place: a running request blocks everything else.
    return start_server("--parallel", "1", "--max-queue", "1", "--ctx-size", "8192",
                        "--no-ui")


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def aborted(server: LiveServer) -> float:
    return metric_value(server.metrics(), "vlmserve_aborted_requests_total", source="api")


def slot_free(server: LiveServer) -> bool:
    return metric_value(server.metrics(), "vlmserve_busy_slots") == 0


def test_closing_a_stream_aborts_the_request(server: LiveServer) -> None:
    before = aborted(server)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{server.url}/v1/chat/completions",
                           json=body(LONG, stream=True)) as response:
            assert response.status_code == 200
            content = []
            for line in response.iter_lines():  # a few chunks, then leave
                if line.startswith("data: {"):
                    content.append(line)
                if len(content) == 5:
                    break
    assert len(content) == 5
    assert '"role":"assistant"' in content[0]

    assert wait_for(lambda: aborted(server) == before + 1), server.log()
    assert wait_for(lambda: slot_free(server))
    # The one slot is free again: a new request is served at once, not after LONG tokens.
    t0 = time.monotonic()
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body(4), timeout=30)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - t0 < 5
    engine_aborts = metric_value(server.metrics(), "vlmserve_engine_finished_total",
                                 finish_reason="abort")
    assert engine_aborts >= 1


def test_leaving_a_plain_request_aborts_it(server: LiveServer) -> None:
    before = aborted(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/chat/completions", json=body(LONG), timeout=1.0)
    assert wait_for(lambda: aborted(server) == before + 1), server.log()
    assert wait_for(lambda: slot_free(server))


def test_full_queue_answers_503_with_retry_after(server: LiveServer) -> None:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = [asyncio.create_task(
                client.post(f"{server.url}/v1/chat/completions", json=body(LONG)))
                for _ in range(4)]
            # One request runs, one waits; the others are refused at once.
            done, pending = await asyncio.wait(tasks, timeout=10,
                                               return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.5)
            refused = [t.result() for t in tasks if t.done() and not t.exception()]
            for task in pending:
                task.cancel()  # closes those connections: the server aborts them
            await asyncio.gather(*pending, return_exceptions=True)
            return refused

    aborted_before = aborted(server)
    refused = asyncio.run(fire())
    busy = [r for r in refused if r.status_code == 503]
    assert busy, [r.status_code for r in refused]
    assert int(busy[0].headers["Retry-After"]) >= 1
    error = busy[0].json()["error"]
    assert error["code"] == "server_busy" and "busy" in error["message"]
    assert wait_for(lambda: slot_free(server), 10)
    assert metric_value(server.metrics(), "vlmserve_engine_rejected_total") >= 1
    # Only the requests that were let in and then left count as aborted, not the refused.
    assert aborted(server) - aborted_before <= 4 - len(busy)


def test_ctrl_c_with_a_stream_open_exits_cleanly(start_server) -> None:
    server = start_server("--no-ui", "--shutdown-timeout", "0")
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{server.url}/v1/chat/completions",
                           json=body(LONG, stream=True)) as response:
            lines = response.iter_lines()
            next(lines)
            server.process.send_signal(signal.SIGINT)
            events = [line for line in lines if line.startswith("data: ")]
    assert server.process.wait(20) == 0, server.log()
    # The answer was ended properly, with a reason, not cut off mid-stream.
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert "shutting down" in error["message"] and error["code"] == "server_shutting_down"


def test_a_client_that_leaves_while_queued_frees_its_queue_place(server: LiveServer) -> None:
    """Before, a queued request whose client had gone kept its place (and so made others
    get 503 server_busy) until it reached a slot and its first token."""
    def queue_depth() -> float:
        return metric_value(server.metrics(), "vlmserve_queue_depth")

    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{server.url}/v1/chat/completions",
                           json=body(LONG, stream=True)) as running:  # holds the one slot
            lines = running.iter_lines()
            next(lines)
            for stream in (False, True):
                with pytest.raises(httpx.ReadTimeout):  # queued behind it, then left
                    httpx.post(f"{server.url}/v1/chat/completions",
                               json=body(4, stream=stream), timeout=1.0)
                assert wait_for(lambda: queue_depth() == 0, 5), server.log()
            # The place is free while the slot is still busy: a new request is queued, not
            # refused with 503.
            assert not slot_free(server)
    assert wait_for(lambda: slot_free(server), 10)

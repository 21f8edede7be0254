"""SIGTERM with streams running and queued: every one ends properly, the process exits 0.

A real ``vlmserve serve`` on the tiny demo model, 4 slots, 8 concurrent streams: 4 run,
4 wait. After the first tokens the server gets SIGTERM. Before the drain existed the 4
queued streams were admitted after the signal, then cut with no error event and no
``[DONE]``, with tracebacks in the log.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from live_server import LiveServer, png_data_uri

IMAGE = png_data_uri(128, 128)
SHUTDOWN_TIMEOUT_S = 2.0


def body(i: int) -> dict:
    # Long enough to still run when the signal comes: the slot's context ends them.
    return {"model": "m", "max_tokens": 8000, "stream": True, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}},
                                     {"type": "text", "text": f"describe {i}"}]}]}


def stream(url: str, i: int, out: dict, first_token: threading.Event) -> None:
    events: list[str] = []
    try:
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", f"{url}/v1/chat/completions", json=body(i)) as r:
                out[i] = {"status": r.status_code, "events": events}
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line.removeprefix("data: "))
                        if '"content":"' in line and '"content":""' not in line:
                            first_token.set()
    except httpx.HTTPError as exc:
        out[i] = {"status": None, "events": events, "exc": repr(exc)}


def test_sigterm_ends_every_queued_and_running_stream_and_exits_0(demo_model, tmp_path):
    server = LiveServer(demo_model.model, demo_model.mmproj, tmp_path / "server.log",
                        "--parallel", "4", "--ctx-size", "4096", "--no-ui",
                        "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)).wait_ready()
    out: dict[int, dict] = {}
    first = threading.Event()
    threads = [threading.Thread(target=stream, args=(server.url, i, out, first))
               for i in range(8)]
    for t in threads:
        t.start()
    assert first.wait(60), server.log()
    time.sleep(0.2)  # the other running streams have begun too; 4 are still queued
    t0 = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # A new request while the server drains: refused with a JSON 503, not admitted.
    late = httpx.post(f"{server.url}/v1/chat/completions", json={**body(99), "stream": False},
                      timeout=10)
    for t in threads:
        t.join(60)
    rc = server.process.wait(30)
    elapsed = time.monotonic() - t0
    log = server.log(None)
    server.stop()

    assert rc == 0, log
    assert elapsed < SHUTDOWN_TIMEOUT_S + 8, elapsed
    assert "Traceback" not in log, log
    assert late.status_code == 503 and late.json()["error"]["code"] == "server_shutting_down"
    ends = []
    for i in range(8):
        result = out[i]
        assert result["status"] == 200, result
        events = result["events"]
        assert events[-1] == "[DONE]", (i, events[-3:], result.get("exc"))
        last = json.loads(events[-2])
        if "error" in last:
            assert last["error"]["code"] == "server_shutting_down", last
            ends.append("error")
        else:
            assert last["choices"][0]["finish_reason"] in ("stop", "length"), last
            ends.append("finish")
    # The 4 that were queued never ran: they end with the error, not an answer.
    assert ends.count("error") >= 4, ends

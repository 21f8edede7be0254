"""Idle, header and body timeouts and the connection limit, on a real server's sockets.

Before, a connection that sent nothing stayed open for ever, headers or a body sent a
byte a second were waited for as long as they took, and nothing capped the number of
connections.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from live_server import LiveServer

IDLE_S, HEADER_S, BODY_S = 1.0, 2.0, 2.0


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("--no-ui", "--idle-timeout", str(IDLE_S), "--header-timeout",
                        str(HEADER_S), "--body-timeout", str(BODY_S))


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def closed_after(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closes ``sock`` (reads and drops what it sends)."""
    t0 = time.monotonic()
    sock.settimeout(limit_s)
    while sock.recv(4096):
        pass
    return time.monotonic() - t0


def test_an_idle_connection_is_closed_after_the_idle_timeout(server: LiveServer) -> None:
    with connect(server) as fresh:  # never sends a byte
        assert closed_after(fresh, IDLE_S + 5) < IDLE_S + 2
    with connect(server) as kept:  # one request, then idle on keep-alive
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in kept.recv(4096).split(b"\r\n")[0]
        assert closed_after(kept, IDLE_S + 5) < IDLE_S + 2


def test_headers_trickled_a_byte_a_second_are_cut_at_the_header_timeout(
        server: LiveServer) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 30
    with connect(server) as sock:
        t0 = time.monotonic()
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sock.settimeout(0.9)  # a byte a second: also notices the close
            try:
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "the server waited for the whole trickled head"
        assert time.monotonic() - t0 < HEADER_S + 2.5


def test_a_body_trickled_a_byte_a_second_gets_408_within_the_body_timeout(
        server: LiveServer) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 40}]})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with connect(server) as sock:
        sock.sendall(head)
        t0 = time.monotonic()
        answer = b""
        for byte in body.encode():
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        elapsed = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert elapsed < BODY_S + 2
    payload = json.loads(answer.split(b"\r\n\r\n", 1)[1] or b"{}") if b"\r\n\r\n" in answer \
        else {}
    assert "did not arrive" in payload.get("error", {}).get("message", ""), answer
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_past_the_connection_limit_new_connections_get_503_and_the_rest_go_on(
        start_server) -> None:
    limited = start_server("--no-ui", "--max-connections", "4", "--idle-timeout", "30")
    held = [connect(limited) for _ in range(4)]
    try:
        time.sleep(0.3)
        over = httpx.get(f"{limited.url}/health", timeout=5)
        assert over.status_code == 503
        assert over.json()["error"]["code"] == "too_many_connections"
        # A held connection is still served while the limit is reached.
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        held[0].settimeout(5)
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{limited.url}/health", timeout=5).status_code == 200

"""``AlertSender`` against real sockets: a receiver that is down gets a bounded number of
tries, each logged, and the alert is counted as failed; a good one gets it once."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlmserve.batch.webhook import AlertSender


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed


def test_a_dead_webhook_is_tried_a_bounded_number_of_times_and_logged():
    said: list[str] = []
    sender = AlertSender(f"http://127.0.0.1:{closed_port()}/hook", tries=3, backoff=0.01,
                         timeout_s=1.0, say=said.append)
    sender.alert({"id": "a1", "field": "violation", "stream": "cam", "frame_time": 1.0})
    sender.close(timeout=10)
    assert sender.sent == 0 and sender.failed == 1
    assert said[0].startswith("ALERT violation on cam at 1.0 s")
    assert sum("webhook try" in line and "retrying" in line for line in said) == 2
    assert "not delivered to the webhook after 3 tries" in said[-1]


def test_a_live_webhook_gets_each_alert_once():
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        sender = AlertSender(f"http://127.0.0.1:{httpd.server_address[1]}/", say=lambda _: None)
        for i in range(3):
            sender.alert({"id": f"x{i}", "field": "f"})
        sender.close(timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [g["id"] for g in got] == ["x0", "x1", "x2"] and sender.sent == 3


def test_a_webhook_must_be_http():
    with pytest.raises(ValueError, match="http"):
        AlertSender("ftp://example/hook")

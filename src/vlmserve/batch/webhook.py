"""Alerts: a JSON POST to a webhook per triggered frame, retried with backoff, logged.

``AlertSender`` owns one thread and a queue, so a slow or dead receiver never holds up
the frames behind it. Each alert carries an ``id``; a delivery is an HTTP 2xx answer, and
an alert is POSTed until one is delivered or ``tries`` are used up (waits of ``backoff``,
2 x ``backoff``, 4 x ... seconds between tries, at most 30 s). Once delivered it is never
sent again, so a receiver sees it exactly once unless the network lost a 2xx answer
(then the ``id`` lets it drop the copy). Every alert, delivered or not, is also a line on
the log (stderr), which works with no webhook at all.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0


class AlertSender:
    def __init__(self, url: str | None, tries: int = 5, backoff: float = 0.5,
                 timeout_s: float = 5.0, say: Callable[[str], None] | None = None) -> None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"--webhook must be an http(s) URL, got {url!r}")
        if tries < 1:
            raise ValueError(f"webhook tries must be >= 1, got {tries}")
        self.url = url
        self.tries = tries
        self.backoff = backoff
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self._say = say or (lambda line: log.warning("%s", line))
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmserve-alerts", daemon=True)
        self._thread.start()

    def alert(self, payload: dict[str, Any]) -> None:
        """Log the alert now and queue its POST (never blocks)."""
        self._say(f"ALERT {payload.get('field')} on {payload.get('stream')} at "
                  f"{payload.get('frame_time')} s (alert {payload.get('id')})")
        if self.url is not None:
            self._queue.put(payload)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (at most ``timeout`` seconds more), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._stop.set()  # cut any backoff still waiting
        self._thread.join(1.0)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while True:
                payload = self._queue.get()
                if payload is None:
                    return
                if self._deliver(client, payload):
                    self.sent += 1
                else:
                    self.failed += 1

    def _deliver(self, client: httpx.Client, payload: dict[str, Any]) -> bool:
        wait = self.backoff
        for attempt in range(1, self.tries + 1):
            try:
                response = client.post(self.url, json=payload)
                if 200 <= response.status_code < 300:
                    return True
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            if attempt == self.tries:
                self._say(f"alert {payload.get('id')} not delivered to the webhook after "
                          f"{self.tries} tries ({reason})")
                return False
            self._say(f"webhook try {attempt} for alert {payload.get('id')} failed ({reason}); "
                      f"retrying in {wait:g} s")
            if self._stop.wait(wait):
                return False
            wait = min(wait * 2, MAX_WAIT_S)
        return False


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

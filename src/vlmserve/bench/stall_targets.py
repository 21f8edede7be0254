"""Where the stall scenario's requests go: the engine in this process, or an OpenAI server.

Both targets do one thing: stream one picture question and record, on the client's
clock, when each token arrived (``StreamRecord``). The stall figures are computed from
those arrival times alone, so the in-process engine, ``vlmserve serve`` and llama-server
are measured by the same yardstick. A stream stops early when its ``stop`` event is set
(the long-running stream, once the burst is over): leaving the engine's iterator or
closing the HTTP response aborts the request on the other side.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field

import httpx

from vlmserve.bench.http import api_client, first_model
from vlmserve.bench.workload import BenchError


@dataclass
class StreamRecord:
    """One request as the client saw it (``time.perf_counter`` seconds)."""

    t_start: float = 0.0  # the client starts (has the picture's bytes)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens)
    t_end: float = 0.0
    completion_tokens: int | None = None  # the server's own count, when it gives one
    finish_reason: str | None = None
    stopped: bool = False  # ended by ``stop``, not by the server

    @property
    def streamed_tokens(self) -> int:
        return sum(n for _, n in self.arrivals)

    @property
    def t_first(self) -> float | None:
        return self.arrivals[0][0] if self.arrivals else None


class InProcessStallTarget:
    """Requests built as ``InProcessTarget`` builds them: the clock starts before the
    picture is decoded, resized and hashed; each ``TokenDelta`` is timed on arrival and
    counted by its ``token_ids``."""

    def __init__(self, engine, max_edge: int) -> None:
        from vlmserve.bench.workload import BENCH_TOKENS
        from vlmserve.chat import ChatRenderer
        from vlmserve.chat_template import QWEN3VL_CHAT_TEMPLATE
        from vlmserve.config import ImageOptions

        self.engine = engine
        self.renderer = ChatRenderer(engine.info.chat_template or QWEN3VL_CHAT_TEMPLATE)
        self.image_options = ImageOptions(max_edge=max(32, min(8192, max_edge)),
                                          tokens=BENCH_TOKENS)
        self._ids = itertools.count()
        self._id_lock = threading.Lock()

    def stream(self, picture: bytes, question: str, max_tokens: int, record: StreamRecord,
               stop: threading.Event | None = None) -> StreamRecord:
        from vlmserve.chat import ChatMessage
        from vlmserve.images import prepare_image
        from vlmserve.types import Request, SamplingParams

        with self._id_lock:
            request_id = f"stall-{next(self._ids)}"
        record.t_start = time.perf_counter()
        image = prepare_image(picture, self.image_options)
        prompt = self.renderer.render([ChatMessage.user(question, image)])
        request = Request(request_id, prompt,
                          SamplingParams(max_tokens=max_tokens, temperature=0.0))
        with closing(self.engine.generate_sync(request)) as deltas:
            for delta in deltas:
                now = time.perf_counter()
                if delta.token_ids:
                    record.arrivals.append((now, len(delta.token_ids)))
                if delta.finished:
                    if delta.error is not None:
                        raise BenchError("the engine failed a stall request: "
                                         f"{delta.error.message}")
                    record.finish_reason = delta.finish_reason.value
                    if delta.stats is not None:
                        record.completion_tokens = delta.stats.completion_tokens
                    break
                if stop is not None and stop.is_set():
                    record.stopped = True
                    break  # closing the iterator aborts the request
        record.t_end = time.perf_counter()
        return record


class HttpStallTarget:
    """Any OpenAI-compatible server: ``POST /v1/chat/completions`` with ``stream: true``,
    the picture as a data URI; every SSE chunk carrying content counts as one token (the
    final ``usage``, when sent, gives the server's own count)."""

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None,
                 timeout_s: float = 600.0) -> None:
        self.base_url, self.client = api_client(url, api_key, timeout_s, max_connections=64)
        self.model = model or first_model(self.client, self.base_url)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def data_uri(picture: bytes) -> str:
        kind = "jpeg" if picture[:3] == b"\xff\xd8\xff" else "png"
        return f"data:image/{kind};base64," + base64.b64encode(picture).decode("ascii")

    def stream(self, picture: bytes, question: str, max_tokens: int, record: StreamRecord,
               stop: threading.Event | None = None) -> StreamRecord:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": self.data_uri(picture)}},
                {"type": "text", "text": question}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        record.t_start = time.perf_counter()
        try:
            with self.client.stream("POST", "/chat/completions", json=payload) as r:
                if r.status_code != 200:
                    r.read()
                    raise BenchError(f"{self.base_url}/chat/completions answered "
                                     f"{r.status_code}: {r.text.strip()[:200]}")
                self._read_events(r, record, stop)
        except httpx.HTTPError as exc:
            raise BenchError(f"streaming from {self.base_url} failed: {exc}") from exc
        record.t_end = time.perf_counter()
        return record

    @staticmethod
    def _read_events(r: httpx.Response, record: StreamRecord,
                     stop: threading.Event | None) -> None:
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            now = time.perf_counter()
            usage = event.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                record.completion_tokens = int(usage["completion_tokens"])
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    record.arrivals.append((now, 1))
                if choice.get("finish_reason"):
                    record.finish_reason = choice["finish_reason"]
            if stop is not None and stop.is_set() and record.finish_reason is None:
                record.stopped = True
                return  # leaving the response closes the connection: the server aborts

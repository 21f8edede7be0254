"""The HTTP target: a running ``vlmserve serve`` (or any OpenAI-compatible server).

Requests go to ``POST {url}/v1/chat/completions`` with ``stream: true`` and the
picture as a PNG data URI, exactly as an OpenAI SDK client would send them.
Token counts come from the stream's final ``usage`` (``stream_options:
{include_usage: true}``), cached tokens from ``usage.prompt_tokens_details``;
the question's length is counted by the server too (prompt tokens of a
text-only message minus the template's overhead). Engine-side figures (image
encode time, engine counters, peak RSS) are the server's and are not measured.
"""

from __future__ import annotations

import base64
import json
import time

import httpx

from vlmserve.bench.runner import Sample
from vlmserve.bench.workload import BenchError


def api_client(url: str, api_key: str | None, timeout_s: float, max_connections: int
               ) -> tuple[str, httpx.Client]:
    """A running server's ``/v1`` base URL and a client for it (bearer key when given)."""
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return base, httpx.Client(base_url=base, headers=headers,
                              timeout=httpx.Timeout(timeout_s, connect=10.0),
                              limits=httpx.Limits(max_connections=max_connections))


def first_model(client: httpx.Client, base_url: str) -> str:
    """The id of the first model ``/v1/models`` lists (what a server serves by default)."""
    try:
        r = client.get("/models")
        r.raise_for_status()
        data = r.json().get("data") or []
    except (httpx.HTTPError, ValueError) as exc:
        raise BenchError(f"cannot list the models of {base_url}: {exc}") from exc
    if not data:
        raise BenchError(f"{base_url}/models lists no model")
    return str(data[0].get("id"))


class HttpTarget:
    concurrent = True

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 600.0) -> None:
        self.base_url, self.client = api_client(url, api_key, timeout_s, max_connections=128)
        self.model = model or first_model(self.client, self.base_url)
        self._overhead: int | None = None

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BenchError(f"cannot reach {self.base_url}: {exc}") from exc
        if r.status_code != 200:
            raise BenchError(f"{self.base_url}{path} answered {r.status_code}: {_message(r)}")
        try:
            return r.json()
        except ValueError as exc:
            raise BenchError(f"{self.base_url}{path} did not answer JSON") from exc

    def _prompt_tokens(self, content: str) -> int:
        body = self._call("POST", "/chat/completions", json={
            "model": self.model, "messages": [{"role": "user", "content": content}],
            "max_tokens": 1, "temperature": 0})
        usage = body.get("usage") or {}
        if "prompt_tokens" not in usage:
            raise BenchError("the server does not report usage.prompt_tokens, so the "
                             "question cannot be cut to an exact token count")
        return int(usage["prompt_tokens"])

    def count_text_tokens(self, text: str) -> int:
        if self._overhead is None:
            self._overhead = self._prompt_tokens("a") - 1  # "a" is one token in any BPE
        return self._prompt_tokens(text) - self._overhead

    def request(self, png: bytes, question: str, max_tokens: int) -> Sample:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": uri}},
                {"type": "text", "text": question}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        t_start = time.perf_counter()
        t_first, chunks, finish, usage = None, 0, None, None
        token_times: list[tuple[float, int]] = []
        try:
            with self.client.stream("POST", "/chat/completions", json=payload) as r:
                if r.status_code != 200:
                    r.read()
                    raise BenchError(f"{self.base_url}/chat/completions answered "
                                     f"{r.status_code}: {_message(r)}")
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    now = time.perf_counter()
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            chunks += 1
                            token_times.append((now, 1))
                            if t_first is None:
                                t_first = now
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise BenchError(f"streaming from {self.base_url} failed: {exc}") from exc
        t_end = time.perf_counter()
        usage = usage or {}
        details = usage.get("prompt_tokens_details") or {}
        return Sample(
            t_start=t_start, t_first=t_first, t_end=t_end, t_first_text=t_first,
            completion_tokens=int(usage.get("completion_tokens", chunks)),
            finish_reason=finish, streamed_tokens=chunks,
            prompt_tokens=usage.get("prompt_tokens"),
            cached_tokens=details.get("cached_tokens"),
            token_times=token_times,
        )


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(body, dict) and body.get("detail"):
            return str(body["detail"])
    except ValueError:
        pass
    return (r.text or "").strip().splitlines()[0][:200] if r.text else "(empty body)"

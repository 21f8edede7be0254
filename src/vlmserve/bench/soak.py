"""The soak: many seeded clients mixing what real ones do, for a bounded time and count.

Each of ``clients`` clients loops until the run's deadline or request budget: it picks,
from its own seeded generator, a streamed or plain answer, a picture (one of a few
repeated ones, a new one, or none), whether to continue its server-side session, and
whether to leave early (a stream after its first token, a plain request after a random
moment). The run reports requests by outcome, TTFT percentiles, the server's slots and
queue after the load (they must return to 0) and its RSS sampled over time (from
``/metrics``' ``process_resident_memory_bytes``). Loopback servers only: it is a load
generator, and must never be pointed at someone else's machine.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from PIL import Image

from vlmserve.bench.machine import load_average
from vlmserve.bench.workload import BenchError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
REPEATED_PICTURES = 4
TURNS_PER_SESSION = 4


@dataclass(frozen=True)
class SoakConfig:
    url: str
    clients: int = 64
    duration_s: float = 600.0
    max_requests: int = 100_000
    seed: int = 0
    sample_every_s: float = 10.0

    def __post_init__(self) -> None:
        check_loopback(self.url)
        if not (self.clients >= 1 and self.duration_s > 0 and self.max_requests >= 1):
            raise BenchError("--clients, --duration and --max-requests must be positive")


def check_loopback(url: str) -> None:
    """Refuse any server but this machine's own (a soak is a load generator)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
        raise BenchError(f"the soak runs only against a loopback server "
                         f"(http://127.0.0.1:PORT), not {url!r}")


@dataclass
class SoakResult:
    statuses: Counter = field(default_factory=Counter)
    stream_ttft_ms: list[float] = field(default_factory=list)  # client clock, first token
    server_ttft_ms: list[float] = field(default_factory=list)  # x_vlmserve of plain answers
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    # (seconds, image-embedding cache MB, session picture store MB): budgets filling up
    # look like growth in RSS; these say how much of it they are.
    cache_mb: list[tuple[float, float, float]] = field(default_factory=list)
    after: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    duration_s: float = 0.0
    load_average: dict[str, list[float]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _png_uri(side: int, rng: random.Random) -> str:
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _refused(status: int, body: bytes) -> str:
    """``"503 server_busy"``: the status and the error code of the JSON body."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "no JSON error"
    return f"{status} {code}"


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Soak:
    """One soak run (see the module doc); ``run()`` returns the ``SoakResult``."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.result = SoakResult()
        rng = random.Random(config.seed)
        self._repeated = [_png_uri(256, rng) for _ in range(REPEATED_PICTURES)]
        self._deadline = 0.0
        self._t0 = 0.0
        self._issued = 0

    async def run(self) -> SoakResult:
        cfg = self.config
        self.result.load_average["start"] = load_average()
        self._t0 = time.monotonic()
        self._deadline = self._t0 + cfg.duration_s
        limits = httpx.Limits(max_connections=cfg.clients + 4)
        async with httpx.AsyncClient(base_url=cfg.url, timeout=120, limits=limits) as http:
            sampler = asyncio.ensure_future(self._sample_rss(http))
            await asyncio.gather(*(self._client(http, i) for i in range(cfg.clients)))
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await self._record_rss(http)
            self.result.after = await self._settled(http)
        self.result.duration_s = round(time.monotonic() - self._t0, 1)
        self.result.requests = self._issued
        self.result.load_average["end"] = load_average()
        return self.result

    # ---- clients
    def _take(self) -> bool:
        if time.monotonic() >= self._deadline or self._issued >= self.config.max_requests:
            return False
        self._issued += 1
        return True

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(self.config.seed * 100_003 + index)
        session, turns, n_session = None, 0, 0
        while self._take():
            if rng.random() < 0.3:
                if session is None or turns >= TURNS_PER_SESSION:
                    n_session += 1
                    session, turns = f"soak-{self.config.seed}-{index}-{n_session}", 0
                turns += 1
                chosen = session
            else:
                chosen = None
            body = await self._body(rng, chosen)
            stream = rng.random() < 0.6
            leave = rng.random() < 0.15
            outcome = await (self._stream(http, body, leave) if stream
                             else self._plain(http, body, leave, rng.uniform(0.05, 0.5)))
            self.result.statuses[outcome] += 1

    async def _body(self, rng: random.Random, session: str | None) -> dict:
        r = rng.random()
        content: list[dict] = [{"type": "text", "text": f"describe {rng.randrange(10**6)}"}]
        if r < 0.4:
            url = self._repeated[rng.randrange(REPEATED_PICTURES)]
        elif r < 0.6:
            url = await asyncio.to_thread(_png_uri, rng.choice((64, 128, 192)),
                                          random.Random(rng.random()))
        else:
            url = None
        if url is not None:
            content.insert(0, {"type": "image_url", "image_url": {"url": url}})
        body = {"model": "m", "max_tokens": rng.randint(4, 48), "temperature": 0.7,
                "seed": rng.randrange(1 << 30),
                "messages": [{"role": "user", "content": content}]}
        if session is not None:
            body["session_id"] = session
        return body

    async def _stream(self, http: httpx.AsyncClient, body: dict, leave: bool) -> str:
        t0 = time.monotonic()
        try:
            async with http.stream("POST", "/v1/chat/completions",
                                   json={**body, "stream": True}) as response:
                if response.status_code != 200:
                    return _refused(response.status_code, await response.aread())
                first, last = False, ""
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    last = line[6:]
                    if not first and '"content":"' in line and '"content":""' not in line:
                        first = True
                        self.result.stream_ttft_ms.append((time.monotonic() - t0) * 1000)
                        if leave:
                            return "left early (stream)"
                if last != "[DONE]":
                    return "stream without [DONE]"
                return "200"
        except httpx.HTTPError as exc:
            return f"error {type(exc).__name__}"

    async def _plain(self, http: httpx.AsyncClient, body: dict, leave: bool,
                     after_s: float) -> str:
        request = asyncio.ensure_future(http.post("/v1/chat/completions", json=body))
        if leave:
            done, _ = await asyncio.wait({request}, timeout=after_s)
            if not done:
                request.cancel()
                await asyncio.gather(request, return_exceptions=True)
                return "left early (plain)"
        try:
            response = await request
        except httpx.HTTPError as exc:
            return f"error {type(exc).__name__}"
        if response.status_code != 200:
            return _refused(response.status_code, response.content)
        ttft = response.json().get("x_vlmserve", {}).get("ttft_ms")
        if ttft:
            self.result.server_ttft_ms.append(float(ttft))
        return "200"

    # ---- the server's side
    async def _sample_rss(self, http: httpx.AsyncClient) -> None:
        while True:
            await self._record_rss(http)
            await asyncio.sleep(self.config.sample_every_s)

    async def _record_rss(self, http: httpx.AsyncClient) -> None:
        try:
            text = (await http.get("/metrics", timeout=10)).text
        except httpx.HTTPError:
            return
        rss = metric(text, "process_resident_memory_bytes")
        t = round(time.monotonic() - self._t0, 1)
        if rss is not None:
            self.result.rss_mb.append((t, round(rss / 2**20, 1)))
        caches = [metric(text, name) or 0.0 for name in
                  ("vlmserve_image_cache_bytes", "vlmserve_session_image_bytes")]
        self.result.cache_mb.append((t, *(round(b / 2**20, 1) for b in caches)))

    async def _settled(self, http: httpx.AsyncClient, timeout_s: float = 15.0
                       ) -> dict[str, float]:
        """Busy slots and queue once the load is gone (waits for them to reach 0)."""
        deadline = time.monotonic() + timeout_s
        values: dict[str, float] = {}
        while True:
            text = (await http.get("/metrics", timeout=10)).text
            values = {name: metric(text, name) or 0.0 for name in
                      ("vlmserve_busy_slots", "vlmserve_queue_depth", "vlmserve_slots")}
            if (values["vlmserve_busy_slots"] == 0 and values["vlmserve_queue_depth"] == 0) \
                    or time.monotonic() >= deadline:
                return values
            await asyncio.sleep(0.2)


def summary(result: SoakResult) -> dict:
    """The figures docs/reliability.md records, as one JSON-ready dict."""
    rss = result.rss_mb
    at_2min = next((mb for t, mb in rss if t >= 120), None)
    final = rss[-1][1] if rss else None
    return {
        "requests": result.requests, "duration_s": result.duration_s,
        "statuses": dict(sorted(result.statuses.items())),
        "stream_ttft_ms": {"p50": percentile(result.stream_ttft_ms, 0.5),
                           "p99": percentile(result.stream_ttft_ms, 0.99),
                           "n": len(result.stream_ttft_ms)},
        "server_ttft_ms": {"p50": percentile(result.server_ttft_ms, 0.5),
                           "p99": percentile(result.server_ttft_ms, 0.99),
                           "n": len(result.server_ttft_ms)},
        "after": result.after,
        "rss_mb": rss,
        "cache_mb": result.cache_mb,
        "rss_change_since_2min_pct": (round((final - at_2min) / at_2min * 100, 2)
                                      if at_2min and final else None),
        "load_average": result.load_average,
    }


def format_summary(s: dict) -> str:
    lines = [f"soak: {s['requests']} requests in {s['duration_s']} s "
             f"(load average {s['load_average'].get('start')} -> "
             f"{s['load_average'].get('end')})", "requests by outcome:"]
    lines += [f"  {name:24s} {count}" for name, count in s["statuses"].items()]
    for key, label in (("stream_ttft_ms", "TTFT, streams, client clock"),
                       ("server_ttft_ms", "TTFT, plain answers, server's figure")):
        t = s[key]
        if t["n"]:
            lines.append(f"{label}: p50 {t['p50']:.0f} ms, p99 {t['p99']:.0f} ms (n={t['n']})")
    after = s["after"]
    lines.append(f"after: busy slots {after.get('vlmserve_busy_slots', 0):g} of "
                 f"{after.get('vlmserve_slots', 0):g}, queue {after.get('vlmserve_queue_depth', 0):g}")
    if s["rss_mb"]:
        lines.append("RSS MB over time: " + ", ".join(f"{t:g}s {mb:g}" for t, mb in s["rss_mb"]))
    if s["cache_mb"]:
        t, image_mb, session_mb = s["cache_mb"][-1]
        lines.append(f"caches at the end: image embeddings {image_mb:g} MB, session "
                     f"pictures {session_mb:g} MB")
    if s["rss_change_since_2min_pct"] is not None:
        lines.append(f"RSS change since minute 2: {s['rss_change_since_2min_pct']:+.2f} %")
    return "\n".join(lines)


def dump(s: dict) -> str:
    return json.dumps(s, indent=2)

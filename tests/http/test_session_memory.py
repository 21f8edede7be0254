"""Sessions hold picture references, not pixels: a live server's memory under sessions.

100 sessions each send the same 1024x1024 picture. Before, each session kept its own
decoded copy (3 MB each: about 300 MB); now the store holds it once (exactly one
picture's bytes, 3 MiB) and the server's RSS grows by less than ``RSS_BOUND_MB``.
"""

from __future__ import annotations

import base64
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from live_server import LiveServer, metric_value

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.*
from tests.conftest import png_bytes  # noqa: E402

SIDE = 1024
PICTURE_BYTES = SIDE * SIDE * 3
RSS_BOUND_MB = 30  # 100 copies would be 300 MB


def data_uri(seed: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(SIDE, SIDE, seed)).decode()


def rss_mb(server: LiveServer) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def turn(client: openai.OpenAI, session: str | None, uri: str | None, text: str = "what?"):
    content: list[dict] = [{"type": "text", "text": text}]
    if uri is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": uri}})
    return client.chat.completions.create(
        model="m", max_tokens=1, temperature=0,
        extra_body={"session_id": session} if session else None,
        messages=[{"role": "user", "content": content}])


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    # Room for one 1024x1024 picture (3 MiB), not two.
    return start_server("--no-ui", "--session-mb", "4", "--parallel", "2")


@pytest.mark.slow
def test_100_sessions_with_the_same_picture_hold_it_once(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    same = data_uri(0)
    # Warm up as the measured wave runs (4 at once, no session): the allocator's
    # per-thread arenas and the caches settle here, not in the measurement.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: turn(client, None, same), range(12)))
    before = rss_mb(server)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: turn(client, f"same-{i}", same), range(100)))
    grown = rss_mb(server) - before
    metrics = server.metrics()
    assert metric_value(metrics, "vlmserve_session_images") == 1
    assert metric_value(metrics, "vlmserve_session_image_bytes") == PICTURE_BYTES
    assert grown < RSS_BOUND_MB, f"RSS grew {grown:.0f} MB over 100 sessions"
    # Every one of them can go on with its picture.
    assert turn(client, "same-42", None, "and now?").usage.prompt_tokens > 1024


def test_an_evicted_picture_gets_a_clear_410_and_can_be_sent_again(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    first, second = data_uri(1), data_uri(2)
    turn(client, "old", first)
    turn(client, "new", second)  # a distinct picture beyond the budget: evicts the first
    assert metric_value(server.metrics(), "vlmserve_session_image_evictions_total") >= 1
    with pytest.raises(openai.APIStatusError) as info:
        turn(client, "old", None, "and now?")
    assert info.value.status_code == 410
    message = info.value.body["message"] if isinstance(info.value.body, dict) else ""
    assert "picture of turn 1" in message and "send it again" in message, info.value.body
    assert turn(client, "old", first, "here it is again").choices  # resent: served

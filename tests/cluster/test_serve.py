"""vlmserve on a real local Ray Serve: 2 engine replicas (tiny demo model, 1 thread each)
behind the ingress, driven with the openai client and plain HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

ray = pytest.importorskip("ray")

from openai import OpenAI  # noqa: E402

from live_server import free_port, png_data_uri  # noqa: E402
from tests.cluster.conftest import wait_for  # noqa: E402
from vlmserve.cluster.deployment import ClusterOptions  # noqa: E402
from vlmserve.cluster.local import APP_NAME, ClusterRun  # noqa: E402
from vlmserve.settings import ServerSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tiny_model) -> Iterator[ClusterRun]:
    settings = ServerSettings.load(model=tiny_model.model, mmproj=tiny_model.mmproj,
                                   threads=1, parallel=2, ctx_size=8192, ui=False,
                                   host="127.0.0.1", port=free_port(), log_level="warning")
    run = ClusterRun(settings, ClusterOptions(replicas=2), num_cpus=2)
    try:
        wait_for(lambda: replicas_up(run) == 2, 60, "2 replicas up")
        yield run
    finally:
        run.stop()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def client(cluster: ClusterRun) -> OpenAI:
    return OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0, timeout=60)


def health(run: ClusterRun) -> dict:
    return httpx.get(f"{run.url}/health", timeout=10).json()


def replicas_up(run: ClusterRun) -> int:
    body = health(run)
    return body.get("replicas", {}).get("up", 0) if len(body["replicas"]["posting"]) == \
        body["replicas"]["up"] else 0


def ask(client: OpenAI, text: str, session: str | None = None, image: str | None = None,
        max_tokens: int = 4):
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image}})
    extra = {"session_id": session} if session else {}
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
        temperature=0, extra_body=extra)


def x(completion) -> dict:
    return completion.model_extra["x_vlmserve"]


def test_a_session_stays_on_one_replica_and_sessions_spread(cluster, client) -> None:
    homes: dict[str, set[str]] = {}
    for n in range(16):
        session = f"spread-{n}"
        for turn in range(2):
            homes.setdefault(session, set()).add(x(ask(client, f"turn {turn}", session))
                                                 ["replica"])
    assert all(len(replicas) == 1 for replicas in homes.values()), homes
    used = {next(iter(r)) for r in homes.values()}
    ids = {p["replica"] for p in health(cluster)["replicas"]["posting"]}
    assert used == ids and len(ids) == 2  # both replicas serve sessions, no one else


def test_a_second_question_about_a_picture_reuses_its_kv(cluster, client) -> None:
    for seed in range(3):  # three pictures: wherever each lands, its follow-up lands there
        picture = png_data_uri(96 + 32 * seed, 64, (40 * seed, 90, 200))
        first = x(ask(client, "what is this?", image=picture))
        second = x(ask(client, "and the colours?", image=picture))
        assert second["replica"] == first["replica"]
        assert first["images"] == 1 and second["cached_tokens"] > first["image_tokens"]


def test_health_and_metrics_cover_every_replica(cluster, client) -> None:
    ask(client, "hello")
    body = health(cluster)
    assert body["status"] == "ok" and body["replicas"]["up"] == body["replicas"]["total"] == 2
    ids = {p["replica"] for p in body["replicas"]["posting"]}
    assert body["slots"] == 4  # 2 slots on each of 2 replicas
    metrics = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    for replica in ids:
        assert f'vlmserve_replica_slots{{replica="{replica}"}} 2.0' in metrics
        assert f'vlmserve_replica_engine_admitted_total{{replica="{replica}"}}' in metrics
    assert "vlmserve_replicas_up 2.0" in metrics
    assert 'vlmserve_http_responses_total{path="/health",status="200"}' in metrics


def sse_events(run: ClusterRun, body: dict, on_first: threading.Event) -> list[str]:
    events: list[str] = []
    with httpx.stream("POST", f"{run.url}/v1/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 3:
                    on_first.set()
    return events


def test_a_replica_killed_mid_stream_is_replaced_and_the_session_survives(cluster,
                                                                          client) -> None:
    session = "kill-me"
    first = ask(client, "remember the red kite", session)
    victim = x(first)["replica"]
    body = {"model": "m", "stream": True, "max_tokens": 8000, "session_id": session,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    streaming = threading.Event()
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(
        events=sse_events(cluster, body, streaming)))
    reader.start()
    assert streaming.wait(30), "the stream never started"
    ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#engine#{victim}", namespace="serve"),
             no_restart=True)
    reader.join(60)
    events = result["events"]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "replica_unavailable" and "Retry" in error["message"]

    # Serve replaces the replica; the new one has a new id.
    def replaced() -> set[str] | None:
        ids = {p["replica"] for p in health(cluster)["replicas"]["posting"]}
        return ids if replicas_up(cluster) == 2 and victim not in ids else None

    ids = wait_for(replaced, 90, "the replica to be replaced")
    assert len(ids) == 2

    # The conversation lives in the ingress: the next turn still has turn one in it.
    again = ask(client, "what did I ask you to remember?", session)
    fresh = ask(client, "what did I ask you to remember?", "kill-me-fresh")
    assert x(again)["replica"] in ids
    assert again.usage.prompt_tokens > fresh.usage.prompt_tokens + 5


def test_leaving_a_stream_early_frees_the_replicas_slot(cluster) -> None:
    body = {"model": "m", "stream": True, "max_tokens": 8000, "session_id": "leaver",
            "messages": [{"role": "user", "content": "go on and on"}]}
    with httpx.stream("POST", f"{cluster.url}/v1/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        next(lines)
        # The answer would run for tens of seconds; the replicas report it busy meanwhile.
        wait_for(lambda: health(cluster)["busy_slots"] >= 1, 10, "a busy slot")
    # Left mid-answer: the ingress cancels the replica's stream and the engine aborts.
    wait_for(lambda: health(cluster)["busy_slots"] == 0, 10, "the slot to be freed")

"""``vlmserve bench --scenario stall`` on the tiny demo model, in process and over HTTP
against a live ``vlmserve serve``: every reported field is there and sane (never a speed
check: timings on a shared box mean nothing). Plus the window arithmetic on made-up times."""

from __future__ import annotations

import json

import pytest

from tests.bench.cli import vlmserve
from tests.live_server import LiveServer
from vlmserve.bench.stall import gaps_overlapping, token_times

NEWCOMERS, NEWCOMER_TOKENS, RUNS = 2, 4, 2
SMALL = ["--image", "128x128", "--newcomers", str(NEWCOMERS), "--newcomer-tokens",
         str(NEWCOMER_TOKENS), "--runs", str(RUNS), "--stream-tokens", "1500",
         "--warm-tokens", "8", "--threads", "1", "--no-progress",
         "--seed-base", "424242"]  # fixed pictures: greedy answers are the same every run




def test_gaps_cover_the_window_and_the_gaps_that_cross_its_edges():
    times = token_times([(0.0, 1), (1.0, 1), (2.0, 2), (5.0, 1), (6.0, 1)])
    assert times == [0.0, 1.0, 2.0, 2.0, 5.0, 6.0]
    # window [1.5, 4]: the gap 1 -> 2 crosses its start, 2 -> 5 its end
    assert gaps_overlapping(times, 1.5, 4.0) == [1.0, 0.0, 3.0]
    assert gaps_overlapping(times, 7.0, 8.0) == []


@pytest.fixture(scope="module")
def in_process(tiny_model, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("stall")
    proc = vlmserve("bench", "--scenario", "stall", "--model", str(tiny_model.model),
                    "--mmproj", str(tiny_model.mmproj), *SMALL, "--threads-vision", "1",
                    "--json", "out.json", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads((folder / "out.json").read_text()), proc.stdout


@pytest.fixture(scope="module")
def over_http(tiny_model, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("stall-http")
    server = LiveServer(tiny_model.model, tiny_model.mmproj, folder / "server.log",
                        "--parallel", str(NEWCOMERS + 1)).wait_ready()
    try:
        proc = vlmserve("bench", "--scenario", "stall", "--url", server.url, *SMALL,
                        "--json", "-", cwd=folder)
    finally:
        rc = server.stop()
    assert proc.returncode == 0, proc.stderr
    assert rc == 0, server.log()
    return json.loads(proc.stdout)


def check_document(doc: dict, mode: str) -> None:
    assert doc["schema"] == "vlmserve-bench-stall/1" and doc["scenario"] == "stall"
    assert doc["mode"] == mode and doc["command"].startswith("vlmserve bench --scenario stall")
    assert len(doc["load_average"]["start"]) == 3 and len(doc["load_average"]["end"]) == 3
    assert doc["duration_s"] > 0 and doc["machine"]["logical_cores"] >= 1
    w = doc["workload"]
    assert w["image"] == [128, 128] and w["newcomers"] == NEWCOMERS and w["runs"] == RUNS
    runs = doc["results"]["runs"]
    assert len(runs) == RUNS
    for r in runs:
        s, n = r["stream"], r["newcomers"]
        assert s["outlasted_burst"] is True and s["stopped"] is True
        assert s["tokens_before_burst"] >= 8
        assert s["streamed_tokens"] >= s["tokens_before_burst"] + s["tokens_in_burst"]
        for window in ("gaps_to_first_tokens", "gaps_to_done"):
            g = s[window]
            assert g["n"] >= 1 and 0 <= g["median_ms"] <= g["max_ms"]
        assert s["gaps_to_done"]["n"] >= s["gaps_to_first_tokens"]["n"]
        assert s["gaps_to_done"]["max_ms"] >= s["gaps_to_first_tokens"]["max_ms"]
        assert len(n["ttft_ms"]) == len(n["total_ms"]) == NEWCOMERS
        assert all(0 < t <= total for t, total in zip(n["ttft_ms"], n["total_ms"], strict=True))
        assert n["completion_tokens"] == [NEWCOMER_TOKENS] * NEWCOMERS
        if mode == "in-process":  # token ids are counted exactly
            assert n["streamed_tokens"] == [NEWCOMER_TOKENS] * NEWCOMERS
        else:  # one SSE chunk per character: a character may span two tokens
            assert all(1 <= k <= NEWCOMER_TOKENS for k in n["streamed_tokens"])
        assert n["finish_reasons"] == ["length"] * NEWCOMERS and n["without_tokens"] == 0
        assert 0 <= n["start_spread_ms"] < r["burst_wall_ms"]
        assert 0 < r["first_tokens_wall_ms"] <= r["burst_wall_ms"]
        assert max(n["ttft_ms"]) <= r["first_tokens_wall_ms"] + n["start_spread_ms"] + 1
        assert r["burst_tokens"] == s["tokens_in_burst"] + NEWCOMERS * NEWCOMER_TOKENS
        assert r["aggregate_tok_s"] == pytest.approx(
            r["burst_tokens"] / (r["burst_wall_ms"] / 1000), rel=0.02)
        assert len(r["load_average"]["start"]) == 3
    summary = doc["results"]["summary"]
    assert summary["stream_outlasted_burst"] is True
    assert summary["newcomers_without_tokens"] == 0
    for key, value in summary.items():
        if key in ("stream_outlasted_burst", "newcomers_without_tokens"):
            continue
        assert value is not None and value["n"] == RUNS, key
        assert 0 <= value["min"] <= value["median"] <= value["max"], key
    assert summary["newcomer_ttft_median_ms"]["min"] > 0
    assert summary["newcomer_ttft_max_ms"]["median"] >= summary["newcomer_ttft_median_ms"]["median"]


def test_in_process(in_process):
    doc, stdout = in_process
    check_document(doc, "in-process")
    e = doc["engine"]
    assert e["threads"] == 1 and e["threads_vision"] == 1 and e["threads_vision_asked"] == 1
    assert e["n_parallel"] == NEWCOMERS + 1 and e["n_ctx_per_slot"] >= 1500
    assert "| stream: worst gap, burst -> all newcomers done (ms) |" in stdout


def test_over_http(over_http):
    check_document(over_http, "http")
    assert over_http["engine"]["url"].endswith("/v1")
    assert over_http["model"]["served_as"]

"""``vlmserve soak``: a short bounded run against the server it starts (tiny demo model).

What the soak itself must find on a healthy server: every request ends with an answer,
an early leave or a clean refusal (no 5xx, no stream without ``[DONE]``, no transport
error), slots and queue return to 0, RSS is sampled, the server exits 0 with no
traceback. Figures are not asserted (that is docs/reliability.md's job).
"""

from __future__ import annotations

import json

import pytest

from tests.bench.cli import vlmserve


@pytest.mark.slow
def test_a_short_soak_finds_a_healthy_server(tiny_model, tmp_path):
    out = tmp_path / "soak.json"
    run = vlmserve("soak", "--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj),
                   "--duration", "8", "--clients", "16", "--seed", "3", "--sample-every", "2",
                   "--json", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out.read_text())
    statuses = figures["statuses"]
    assert statuses.get("200", 0) > 0, statuses
    bad = {k: v for k, v in statuses.items() if k.startswith(("5", "error", "stream without"))
           and k != "503 server_busy"}  # a full queue is a clean refusal
    assert not bad, statuses
    assert figures["after"]["vlmserve_busy_slots"] == 0
    assert figures["after"]["vlmserve_queue_depth"] == 0
    assert len(figures["rss_mb"]) >= 2
    assert figures["server_exit_code"] == 0 and figures["server_tracebacks"] == 0
    assert "requests by outcome" in run.stdout and "p99" in run.stdout


def test_the_soak_refuses_a_server_that_is_not_on_loopback(tmp_path):
    run = vlmserve("soak", "--url", "http://192.168.1.10:7860", "--duration", "1",
                   cwd=tmp_path)
    assert run.returncode == 1
    assert "only against a loopback server" in run.stderr and "Traceback" not in run.stderr

"""Fixtures for the HTTP tests: the tiny demo model and live servers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for live_server

from live_server import LiveServer  # noqa: E402
from vlmserve.models.demo import DemoModelFiles, write_demo_model  # noqa: E402


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> DemoModelFiles:
    """The tiny random-weight Qwen3-VL pair, written once per test session."""
    return write_demo_model(tmp_path_factory.mktemp("demo-model"))


@pytest.fixture(scope="module")
def start_server(demo_model: DemoModelFiles, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[Callable[..., LiveServer]]:
    """A factory for servers that live until the end of the module: ``start_server(*flags)``.

    Each must shut down cleanly (exit code 0) on SIGTERM, and log no traceback: a client
    that misbehaves must never make the server fail.
    """
    servers: list[LiveServer] = []

    def start(*flags: str) -> LiveServer:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = LiveServer(demo_model.model, demo_model.mmproj, log, *flags)
        servers.append(server)
        return server.wait_ready()

    yield start
    for server in servers:
        rc = server.stop()
        assert rc == 0, f"server exited with {rc} on SIGTERM:\n{server.log()}"
        assert "Traceback" not in server.log(None), server.log(None)

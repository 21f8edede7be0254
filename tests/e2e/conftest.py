"""Fixtures for the browser tests: a live server with the page, and headless Chromium."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for live_server

from live_server import LiveServer  # noqa: E402
from vlmserve.models.demo import write_demo_model  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own download is never used
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The server with its page, serving the demo model as ``start.sh`` does offline."""
    model = write_demo_model(tmp_path_factory.mktemp("demo-model"))
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = LiveServer(model.model, model.mmproj, log, "--parallel", "2", "--demo")
    yield server.wait_ready()
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(None), server.log(None)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (./scripts/install.sh --test installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_server: LiveServer) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 1200}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(30_000)
    outside: list[str] = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((page_server.url, "data:", "blob:")) else None)
    page.goto(page_server.url + "/")
    page.wait_for_selector("#vlm-input textarea")
    yield page
    context.close()
    assert not outside, f"the page called out of the machine: {outside}"  # private service

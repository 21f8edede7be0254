"""An engine over the tiny demo model for clip tests (1 llama thread, as elsewhere)."""

from __future__ import annotations

import pytest

from tests.engine.conftest import make_engine


@pytest.fixture(scope="module")
def engine(tiny_model):
    client = make_engine(tiny_model, n_parallel=2)
    yield client
    client.close()

"""An engine over the tiny model, started once per module (1 llama thread: see LLAMACPP notes)."""

from __future__ import annotations

import pytest

from tests.conftest import png_bytes
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.config import EngineConfig
from vlmserve.engine.client import EngineClient
from vlmserve.engine.factory import create_engine
from vlmserve.images import prepare_image
from vlmserve.types import Prompt, Request, SamplingParams, TokenDelta


def make_engine(files, vision_worker: bool = True, **overrides) -> EngineClient:
    cfg = dict(model_path=files.model, mmproj_path=files.mmproj, n_ctx_per_slot=4096,
               n_parallel=4, n_threads=1, n_threads_vision=1)
    cfg.update(overrides)
    return create_engine(EngineConfig(**cfg), vision_worker=vision_worker)


@pytest.fixture(scope="module")
def engine(tiny_model):
    client = make_engine(tiny_model)
    yield client
    client.close()


@pytest.fixture(scope="module")
def qwen_engine(qwen_model):
    """An engine over the tiny model with Qwen's real vocabulary."""
    client = make_engine(qwen_model)
    yield client
    client.close()


def image_prompt(engine: EngineClient, question: str, width: int = 256, height: int = 256,
                 seed: int = 0, history: list[ChatMessage] | None = None) -> Prompt:
    image = prepare_image(png_bytes(width, height, seed))
    messages = [*(history or []), ChatMessage.user(question, image)]
    return ChatRenderer(engine.info.chat_template).render(messages)


def run(engine: EngineClient, prompt: Prompt, max_tokens: int = 16, request_id: str = "r",
        **sampling) -> tuple[list[TokenDelta], TokenDelta]:
    """All deltas of one request and its final delta."""
    params = SamplingParams(max_tokens=max_tokens, **{"temperature": 0.0, **sampling})
    deltas = list(engine.generate_sync(Request(request_id, prompt, params)))
    return deltas, deltas[-1]


def token_ids(deltas: list[TokenDelta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]

"""The app's engine, and an honest answer to "is the model loaded yet?".

A real model takes seconds to load; the server starts listening at once and loads in a
worker thread, so ``/health`` can say 503 ``loading`` (or ``error``) until the model is
ready, and the page can open and say so.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vlmserve.chat import ChatRenderer
from vlmserve.config import EngineConfig
from vlmserve.engine.client import EngineClient
from vlmserve.engine.factory import create_engine
from vlmserve.errors import VlmserveError
from vlmserve.http.errors import EngineUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A ready engine with what the request path needs next to it."""

    engine: EngineClient
    renderer: ChatRenderer  # built once: compiling the chat template costs milliseconds
    model_id: str  # what /v1/models and responses call the model
    created: int  # unix time the model finished loading

    @classmethod
    def of(cls, engine: EngineClient) -> LoadedModel:
        info = engine.info
        model_id = info.model_name or Path(info.model_path).stem
        return cls(engine, ChatRenderer.for_model(info.chat_template), model_id,
                   int(time.time()))


class EngineHolder:
    """Holds the engine: given ready-made, or loaded (once) from an ``EngineConfig``.

    ``state`` is ``"loading"``, ``"ready"`` or ``"error"``; ``get()`` returns the loaded
    model or raises ``EngineUnavailableError`` (503) saying which of the other two.
    Only an engine this holder loaded is closed by ``close()``.
    """

    def __init__(self, engine: EngineClient | None = None) -> None:
        self._model = LoadedModel.of(engine) if engine is not None else None
        self._owned: EngineClient | None = None
        self._error: str | None = None
        self._lock = threading.Lock()  # load() runs in a worker thread, close() in the loop

    @property
    def state(self) -> str:
        if self._model is not None:
            return "ready"
        return "error" if self._error is not None else "loading"

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def get(self) -> LoadedModel:
        model = self._model
        if model is not None:
            return model
        if self._error is not None:
            raise EngineUnavailableError(f"the model failed to load: {self._error}")
        raise EngineUnavailableError("the model is still loading; retry in a few seconds",
                                     retry_after_s=5)

    def load(self, config: EngineConfig) -> None:
        """Create the engine (blocking: call it from a worker thread).

        A ``VlmserveError`` is recorded for ``/health`` and re-raised; anything else is
        recorded as an internal error (details in the log).
        """
        if self._model is not None:
            return
        t0 = time.perf_counter()
        try:
            engine = create_engine(config)
        except VlmserveError as exc:
            self._error = exc.message
            raise
        except Exception as exc:
            log.exception("loading the model failed")
            self._error = f"internal error while loading the model ({type(exc).__name__})"
            raise VlmserveError(self._error) from exc
        with self._lock:
            self._owned = engine
            self._model = LoadedModel.of(engine)
        log.info("model %s loaded in %.1f s", self._model.model_id, time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the engine this holder loaded (idempotent)."""
        with self._lock:
            engine, self._owned = self._owned, None
        if engine is not None:
            engine.close()

"""``create_app``: the one FastAPI app serving the API, ops endpoints and the page.

Everything is built inside ``create_app`` (no module-level app, registry or store), so a
test can build as many independent apps as it likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, FastAPI

from vlmserve.engine.client import EngineClient
from vlmserve.errors import VlmserveError
from vlmserve.http.connection_guard import BodyTimeout
from vlmserve.http.engine_holder import EngineHolder
from vlmserve.http.errors import drop_validation_422, install_error_handlers
from vlmserve.http.limits import BodySizeLimit
from vlmserve.http.metrics import ResponseCounter
from vlmserve.http.openai_routes import openai_router
from vlmserve.http.ops_routes import ops_router
from vlmserve.http.responses_routes import responses_router
from vlmserve.http.services import Services
from vlmserve.http.shutdown import ShutdownGate
from vlmserve.settings import ServerSettings

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings, engine: EngineClient | None = None, *,
               on_load_error: Callable[[VlmserveError], None] | None = None,
               first_routes: Callable[[Services], APIRouter] | None = None) -> FastAPI:
    """Build the app.

    With ``engine`` given, the app uses it and leaves closing it to the caller. Without,
    the app's lifespan loads one from ``settings`` in a worker thread, so the server
    answers at once (``/health`` says 503 ``loading`` until the model is ready), and
    closes it at shutdown. A load failure is logged, shown by ``/health``, and passed to
    ``on_load_error`` (the CLI uses it to stop the server and exit 1).

    ``first_routes`` builds routes matched before the built-in ones: the seam where a
    deployment that puts the engine elsewhere (``vlmserve.cluster``: replicas on Ray)
    answers ``/health`` and ``/metrics`` for all of them.

    Raises ``ModelNotFoundError`` at once when neither ``engine`` nor a model path is set.
    """
    holder = EngineHolder(engine)
    engine_config = settings.to_engine_config() if engine is None else None
    services = Services.build(settings, holder)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading: asyncio.Task[None] | None = None
        if engine_config is not None:
            loading = asyncio.create_task(asyncio.to_thread(holder.load, engine_config))
            loading.add_done_callback(lambda task: _report_load(task, on_load_error))
        try:
            yield
        finally:
            if loading is not None:
                # A thread cannot be cancelled: let a load in progress finish, then close.
                await asyncio.wait({loading})
            await asyncio.to_thread(holder.close)

    app = FastAPI(
        title="vlmserve",
        summary="Local Qwen3-VL image Q&A: OpenAI-compatible API and web page",
        lifespan=lifespan,
        docs_url=None,  # Swagger/ReDoc pages load scripts from a CDN; a private
        redoc_url=None,  # service should not make browsers call out. /openapi.json stays.
    )
    app.state.services = services
    install_error_handlers(app)
    generated_openapi = app.openapi
    app.openapi = lambda: drop_validation_422(generated_openapi())  # 400s, not 422s
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(BodyTimeout, timeout_s=settings.body_timeout)
    app.add_middleware(ResponseCounter, metrics=services.metrics)
    app.add_middleware(ShutdownGate, shutdown=services.shutdown)  # outermost: first to refuse
    if first_routes is not None:
        app.include_router(first_routes(services))
    app.include_router(ops_router(services))
    app.include_router(responses_router(services))  # before openai_router's /v1 catch-all
    app.include_router(openai_router(services))
    if settings.ui:
        from vlmserve.http.ui import mount_ui  # imports Gradio: seconds, so only when needed

        mount_ui(app, services)
    return app


def _report_load(task: asyncio.Task[None],
                 on_load_error: Callable[[VlmserveError], None] | None) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return
    error = exc if isinstance(exc, VlmserveError) else VlmserveError(str(exc))
    log.error("the model failed to load: %s", error.message)
    if on_load_error is not None:
        on_load_error(error)

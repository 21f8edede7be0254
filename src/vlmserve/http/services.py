"""Everything one app's routes and page share, built once by ``create_app``.

Kept on ``app.state.services`` (routes) and passed to the page builder: no module-level
state, so two apps in one process (tests do this) never see each other's sessions,
metrics or engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from vlmserve.engine.client import EngineSnapshot
from vlmserve.http.engine_holder import EngineHolder, LoadedModel
from vlmserve.http.generation import Generation
from vlmserve.http.image_loader import ImageLoader
from vlmserve.http.metrics import Metrics
from vlmserve.http.remote_images import RemotePolicy
from vlmserve.http.response_store import ResponseStore
from vlmserve.http.shutdown import Shutdown
from vlmserve.http.video_loader import VideoLoader
from vlmserve.session_images import SessionImageStore
from vlmserve.sessions import SessionStore, validate_session_id
from vlmserve.settings import MIB, ServerSettings
from vlmserve.templates import TemplateRegistry
from vlmserve.types import Request


class SessionLocks:
    """One ``asyncio.Lock`` per session id, so one session's turns run one at a time.

    Two requests continuing the same conversation at once would both read the same
    history and the second write would lose the first turn. Locks live only while someone
    holds or waits for them (a weak-value map), so idle sessions cost nothing here.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def get(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str | None) -> AsyncIterator[None]:
        """Hold the session's lock (nothing to hold without a session)."""
        if session_id is None:
            yield
            return
        async with self.get(session_id):
            yield


@dataclass
class Services:
    """The app's shared objects."""

    settings: ServerSettings
    holder: EngineHolder
    templates: TemplateRegistry
    sessions: SessionStore
    images: ImageLoader
    metrics: Metrics
    shutdown: Shutdown
    session_locks: SessionLocks = field(default_factory=SessionLocks)
    responses: ResponseStore = field(default_factory=ResponseStore)  # stored /v1/responses
    videos: VideoLoader | None = None  # video_url parts (None: refused)

    @classmethod
    def build(cls, settings: ServerSettings, holder: EngineHolder) -> Services:
        templates = TemplateRegistry.builtin()
        if settings.templates_file is not None:
            templates = templates.with_user_file(settings.templates_file.expanduser())

        def snapshot() -> EngineSnapshot | None:
            model = holder.model
            return model.engine.snapshot() if model is not None else None

        sessions = SessionStore(settings.session_ttl_s, settings.max_sessions,
                                images=SessionImageStore(int(settings.session_mb * MIB)))
        return cls(
            settings=settings,
            holder=holder,
            templates=templates,
            sessions=sessions,
            images=ImageLoader(settings.image_options(), settings.allow_remote_images,
                               settings.remote_image_timeout_s,
                               RemotePolicy.parse(settings.remote_image_allow)),
            metrics=Metrics(snapshot, sessions.images.stats),
            shutdown=Shutdown(holder, settings.shutdown_timeout),
            responses=ResponseStore(settings.session_ttl_s, settings.max_sessions),
            videos=VideoLoader(settings.video_options(), settings.allow_remote_images,
                               settings.remote_image_timeout_s,
                               RemotePolicy.parse(settings.remote_image_allow)),
        )

    def model(self) -> LoadedModel:
        """The loaded model, or ``EngineUnavailableError`` (503)."""
        return self.holder.get()

    def generation(self, request: Request, source: str, dropped_turns: int = 0) -> Generation:
        """A ``Generation`` on the loaded engine, counted in metrics."""
        return Generation(self.model().engine, request, self.metrics, source, dropped_turns)

    @staticmethod
    def checked_session_id(session_id: str | None) -> str | None:
        return validate_session_id(session_id) if session_id is not None else None

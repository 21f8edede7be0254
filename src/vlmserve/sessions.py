"""Server-side conversations, kept in memory and keyed by a client-chosen session id.

A client that sends a ``session_id`` need not resend the history: the HTTP layer reads
the stored messages, adds the new turn, and stores the result. Sessions expire after
``ttl_s`` seconds without use and the least recently used one is evicted at the cap;
nothing survives a restart. One ``SessionStore`` per app (no global instance).

Pictures are not kept in the session: a stored message holds a reference (content hash
and geometry) into a ``SessionImageStore``, which holds each picture once within its byte
budget. Reading a session resolves the references; one whose picture was evicted raises
``SessionImageGoneError`` naming the turn, so the client can send it again.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vlmserve.chat import ChatMessage, ImagePart, TextPart, ToolCall
from vlmserve.errors import RequestError, SessionImageGoneError, VlmserveError
from vlmserve.session_images import SessionImageStore
from vlmserve.types import ImageGeometry, PreparedImage

# The picture store's budget when a SessionStore is built without one (tests, tools).
DEFAULT_IMAGE_BYTES = 256 * 1024 * 1024

_SESSION_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is 1-128 characters of ``[A-Za-z0-9._:-]``.

    Raises ``RequestError`` otherwise (the id comes from the client).
    """
    if not isinstance(session_id, str) or not _SESSION_ID_RE.fullmatch(session_id):
        shown = repr(session_id) if len(repr(session_id)) <= 40 else repr(session_id)[:37] + "..."
        raise RequestError(
            f"invalid session id {shown}: use 1-128 characters of A-Z a-z 0-9 . _ : -"
        )
    return session_id


@dataclass(frozen=True)
class _ImageRef:
    """A picture of a stored message: its key in the picture store, and where it came
    from (the same pixels from two photos may have different geometry)."""

    content_hash: str
    geometry: ImageGeometry | None


@dataclass(frozen=True)
class _Stored:
    """A ``ChatMessage`` as a session keeps it: pictures as references."""

    role: str
    parts: tuple[TextPart | _ImageRef, ...]
    tool_calls: tuple[ToolCall, ...]
    tool_call_id: str | None


@dataclass
class _Session:
    # A message without pictures is kept as it is (nothing to resolve on read).
    messages: list[ChatMessage | _Stored] = field(default_factory=list)
    last_used: float = 0.0


class SessionStore:
    """In-memory conversations keyed by session id; thread-safe.

    ``get`` returns a copy of a session's messages (empty for an unknown or expired id);
    ``append`` adds messages (creating the session); ``replace`` sets them (an empty list
    deletes the session); ``delete`` removes it. Every call counts as a use: a session
    expires ``ttl_s`` seconds after its last use, and when ``max_sessions`` are held the
    least recently used one is evicted to make room. Expired sessions are purged lazily,
    on the next call. ``clock`` is injectable for tests. Pictures go to ``images`` (see
    the module doc).
    """

    def __init__(
        self,
        ttl_s: float = 3600,
        max_sessions: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        images: SessionImageStore | None = None,
    ) -> None:
        if not ttl_s > 0:
            raise VlmserveError(f"session ttl must be > 0 seconds, got {ttl_s}")
        if max_sessions < 1:
            raise VlmserveError(f"max sessions must be >= 1, got {max_sessions}")
        self._ttl_s = float(ttl_s)
        self._max_sessions = int(max_sessions)
        self._clock = clock
        self.images = images if images is not None else SessionImageStore(DEFAULT_IMAGE_BYTES)
        # One lock, held only for dict and list operations (no I/O, no rendering), so
        # async handlers can call in without stalling the event loop.
        self._lock = threading.Lock()
        # Least recently used first: a use moves a session to the end, so both expiry
        # and eviction look only at the front.
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    @property
    def max_sessions(self) -> int:
        return self._max_sessions

    def get(self, session_id: str, offered: Iterable[PreparedImage] = ()) -> list[ChatMessage]:
        """A copy of the session's messages; empty if the session is unknown or expired.

        ``offered``: pictures of the new turn, stored first, so a client that sends an
        evicted picture again gets its old turns back. Raises ``SessionImageGoneError``
        when a turn's picture is no longer held.
        """
        validate_session_id(session_id)
        for image in offered:
            self.images.put(image)
        with self._lock:
            now = self._purge()
            session = self._sessions.get(session_id)
            if session is None:
                return []
            self._touch(session_id, session, now)
            stored = list(session.messages)
        return self._resolve(session_id, stored)

    def append(self, session_id: str, *messages: ChatMessage) -> None:
        """Add ``messages`` to the end of the session, creating it if needed."""
        validate_session_id(session_id)
        _check_messages(messages)
        stored = [self._store(m) for m in messages]
        with self._lock:
            now = self._purge()
            session = self._session_for_write(session_id)
            session.messages.extend(stored)
            self._touch(session_id, session, now)

    def replace(self, session_id: str, messages: Iterable[ChatMessage]) -> None:
        """Set the session's messages (e.g. to the trimmed history); empty deletes it."""
        validate_session_id(session_id)
        messages = list(messages)
        _check_messages(messages)
        stored = [self._store(m) for m in messages]
        with self._lock:
            now = self._purge()
            if not stored:
                self._sessions.pop(session_id, None)
                return
            session = self._session_for_write(session_id)
            session.messages = stored
            self._touch(session_id, session, now)

    def delete(self, session_id: str) -> bool:
        """Forget the session; ``True`` if it existed (and had not expired)."""
        validate_session_id(session_id)
        with self._lock:
            self._purge()
            return self._sessions.pop(session_id, None) is not None

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            self._purge()
            return session_id in self._sessions

    def __len__(self) -> int:
        with self._lock:
            self._purge()
            return len(self._sessions)

    def _store(self, message: ChatMessage) -> ChatMessage | _Stored:
        """The message with its pictures put in the picture store (outside the lock)."""
        if not any(isinstance(part, ImagePart) for part in message.parts):
            return message
        parts: list[TextPart | _ImageRef] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                self.images.put(part.image)
                parts.append(_ImageRef(part.image.content_hash, part.image.geometry))
            else:
                parts.append(part)
        return _Stored(message.role, tuple(parts), message.tool_calls, message.tool_call_id)

    def _resolve(self, session_id: str, stored: list[ChatMessage | _Stored]
                 ) -> list[ChatMessage]:
        out, turn = [], 0
        for message in stored:
            turn += message.role == "user"
            if isinstance(message, ChatMessage):
                out.append(message)
                continue
            parts = []
            for part in message.parts:
                if isinstance(part, _ImageRef):
                    image = self.images.get(part.content_hash)
                    if image is None:
                        raise SessionImageGoneError(
                            f"the picture of turn {turn} of session {session_id!r} is no "
                            "longer held (the server's session picture budget, --session-mb, "
                            "is full); send it again, or start a new session")
                    if image.geometry != part.geometry:
                        image = dataclasses.replace(image, geometry=part.geometry)
                    parts.append(ImagePart(image))
                else:
                    parts.append(part)
            out.append(ChatMessage(message.role, tuple(parts), tool_calls=message.tool_calls,
                                   tool_call_id=message.tool_call_id))
        return out

    # The helpers below run with the lock held.

    def _purge(self) -> float:
        """Drop expired sessions (all at the front); return the current time."""
        now = self._clock()
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_used < self._ttl_s:
                break
            del self._sessions[oldest_id]
        return now

    def _session_for_write(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            while len(self._sessions) >= self._max_sessions:
                self._sessions.popitem(last=False)  # evict the least recently used
            session = self._sessions[session_id] = _Session()
        return session

    def _touch(self, session_id: str, session: _Session, now: float) -> None:
        session.last_used = now
        self._sessions.move_to_end(session_id)


def _check_messages(messages: Iterable[object]) -> None:
    for message in messages:
        if not isinstance(message, ChatMessage):
            raise TypeError(f"sessions hold ChatMessage objects, not {type(message).__name__}")

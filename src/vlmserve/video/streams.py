"""Camera streams through PyAV: a frame every few seconds, reopened when the stream drops.

A source is an ``rtsp://`` / ``rtmp://`` URL, an ``http(s)://`` MJPEG or HLS URL, a
device path (``/dev/video0``: Video4Linux) or a video file, which is *played in real
time* (its frames are released at their own timestamps, as a camera would deliver them)
and ends at its end. Live sources have no end: when one fails or ends, it is reopened
after a backoff (1, 2, 4 ... at most 10 s) until the reader is stopped.

``StreamReader.frames`` yields ``StreamFrame``s: the newest frame once every ``every``
seconds of stream time (a file's timestamps; a live source's arrival clock, since
camera timestamps are often missing or wrong). Stopping is checked between frames, and
every open and read has a timeout, so a dead camera never hangs the reader.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from PIL import Image

from vlmserve.errors import VideoError
from vlmserve.video.pyav import import_av

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
                "srt://")
MAX_BACKOFF_S = 10.0


@dataclass(frozen=True)
class StreamFrame:
    """One sampled frame of a stream."""

    source: str
    index: int  # 0, 1, 2 ... over the reader's life (across reopens)
    time_s: float  # stream time: a file's timestamp, a live source's seconds since start
    image: Image.Image = field(repr=False)
    connection: int = 1  # which opening of the source gave it (2+ after a reopen)


def is_live(source: str) -> bool:
    return source.lower().startswith(LIVE_SCHEMES) or source.startswith("/dev/")


def check_source(source: str) -> None:
    """Refuse what cannot be a stream before any model loads (one line)."""
    if source.startswith("/dev/") and not os.path.exists(source):
        raise VideoError(f"{source}: no such device")
    if is_live(source):
        return
    if not os.path.exists(source):
        raise VideoError(f"{source}: no such file, and not a stream URL (rtsp://, http(s)://) "
                         "or a device (/dev/video0)")
    if os.path.isdir(source):
        raise VideoError(f"{source}: is a folder; give a video file, a stream URL or a device")


class StreamReader:
    """Reads one source until ``stop()``; see the module doc."""

    def __init__(self, source: str, every: float, *, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, on_event: Callable[[str], None] | None = None,
                 realtime: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        if every <= 0:
            raise VideoError(f"--every must be > 0, got {every}")
        self.source = source
        self.every = every
        self.live = is_live(source)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.realtime = realtime
        self.connections = 0
        self._on_event = on_event or (lambda message: log.warning("%s", message))
        self._clock = clock
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def frames(self) -> Iterator[StreamFrame]:
        """Sampled frames until stopped (or, for a file, its end)."""
        av = import_av()
        start = self._clock()
        next_due = 0.0
        index = 0
        backoff = 1.0
        while not self._stop.is_set():
            self.connections += 1
            got_any = False
            try:
                with self._open(av) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    opened = self._clock()
                    first_pts_time: float | None = None
                    for frame in container.decode(stream):
                        if self._stop.is_set():
                            return
                        got_any = True
                        if self.live:
                            t = self._clock() - start
                        else:
                            ft = frame.time if frame.time is not None else 0.0
                            first_pts_time = ft if first_pts_time is None else first_pts_time
                            t = ft - first_pts_time
                            if self.realtime:  # release the frame at its own time
                                delay = opened + t - self._clock()
                                if delay > 0 and self._stop.wait(delay):
                                    return
                        if t + 1e-6 < next_due:
                            continue
                        next_due = t + self.every
                        yield StreamFrame(self.source, index, round(t, 3),
                                          frame.to_image().convert("RGB"), self.connections)
                        index += 1
            except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
                if not self.live:
                    raise VideoError(f"{self.source}: {_reason(exc)}") from None
                self._on_event(f"stream {self.source} dropped ({_reason(exc)}); "
                               f"reopening in {backoff:g} s")
            else:
                if not self.live:
                    return  # a file played to its end
                self._on_event(f"stream {self.source} ended; reopening in {backoff:g} s")
            if self._stop.wait(backoff):
                return
            backoff = 1.0 if got_any else min(backoff * 2, MAX_BACKOFF_S)

    def _open(self, av):
        options: dict[str, str] = {}
        fmt = None
        if self.source.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"
        if self.source.startswith("/dev/"):
            fmt = "v4l2"
        container = av.open(self.source, mode="r", format=fmt, options=options,
                            timeout=(self.open_timeout_s, self.read_timeout_s))
        if not container.streams.video:
            container.close()
            raise ValueError("no video stream")
        return container


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:120]

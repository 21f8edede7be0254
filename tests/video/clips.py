"""Clips and camera streams the tests make themselves: PyAV writes them, a thread serves them.

``write_clip`` encodes frames whose content changes with their index (so samples differ
and a repeated frame is truly identical); ``MjpegServer`` serves multipart JPEG streams
from 127.0.0.1, one script per connection (so a test can drop a connection and see the
reader reopen it), and records webhook POSTs, failing the first try of each alert when
asked.
"""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
from PIL import Image, ImageDraw


def frame_array(index: int, width: int, height: int) -> np.ndarray:
    """A frame that differs from its neighbours: a bar that moves, a level that rises."""
    a = np.full((height, width, 3), 20, np.uint8)
    a[:, :, 2] = (index * 9) % 256
    x = (index * 7) % max(1, width - 8)
    a[:, x:x + 8, 0] = 240
    return a


def write_clip(path=None, *, n_frames: int = 25, rate: int = 10, width: int = 64,
               height: int = 64, codec: str = "mpeg4", fmt: str = "mp4") -> bytes:
    """An encoded clip (written to ``path`` too when given)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_array(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buf.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def unknown_codec_clip() -> bytes:
    """An AVI whose codec tag no FFmpeg knows (its MPEG-4 tag rewritten)."""
    data = write_clip(n_frames=5, fmt="avi")
    assert data.count(b"FMP4") >= 1
    return data.replace(b"FMP4", b"QQZZ")


def scene_jpeg(scene: int, size: int = 96) -> bytes:
    """One camera picture per scene number; the same scene gives the same bytes."""
    im = Image.new("RGB", (size, size), (25, 25, 25))
    draw = ImageDraw.Draw(im)
    x = 6 + (scene * 23) % (size - 30)
    draw.rectangle((x, 10, x + 22, size - 10), fill=(235, 235, 235))
    draw.ellipse((size - 30, 5 + scene * 11 % 50, size - 6, 29 + scene * 11 % 50),
                 fill=(200, 40 + scene * 50 % 200, 40))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class MjpegServer:
    """``/cam/NAME``: the NAME script's next connection: a list of (scene, seconds); after
    the last script the last one repeats. ``/hook``: a webhook that records each POST and
    answers 500 to the first try of each alert id when ``fail_first``."""

    def __init__(self, scripts: dict[str, list[list[tuple[int, float]]]], fps: float = 10.0,
                 fail_first: bool = True) -> None:
        self.scripts = scripts
        self.fps = fps
        self.fail_first = fail_first
        self.connections: dict[str, int] = {name: 0 for name in scripts}
        self.posts: list[tuple[int, dict]] = []  # (status answered, body)
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._serve_stream(self)

            def do_POST(self) -> None:
                owner._serve_hook(self)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _serve_stream(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.rsplit("/", 1)[-1]
        if name not in self.scripts:
            h.send_error(404)
            return
        with self._lock:
            n = self.connections[name]
            self.connections[name] = n + 1
        script = self.scripts[name][min(n, len(self.scripts[name]) - 1)]
        h.send_response(200)
        h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        h.end_headers()
        try:
            for scene, seconds in script:
                jpeg = scene_jpeg(scene)
                for _ in range(max(1, round(seconds * self.fps))):
                    h.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                  + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    h.wfile.flush()
                    time.sleep(1 / self.fps)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _serve_hook(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        with self._lock:
            seen = any(b.get("id") == body.get("id") for _, b in self.posts)
            status = 500 if self.fail_first and not seen else 200
            self.posts.append((status, body))
        h.send_response(status)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def delivered(self) -> list[dict]:
        with self._lock:
            return [b for status, b in self.posts if status == 200]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def empty_clip() -> bytes:
    """A Matroska file with a video stream and no frame in it."""
    buf = io.BytesIO()
    container = av.open(buf, "w", format="matroska")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()
    return buf.getvalue()

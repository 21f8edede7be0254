"""A fake Hugging Face Hub on 127.0.0.1, speaking what the installed huggingface_hub asks for.

Endpoints, as read from huggingface_hub's source (``hf_api.py``, ``file_download.py``):

* ``GET  /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info
  (``HfApi.model_info``): ``id``, ``sha`` (the commit), ``siblings``.
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=..&expand=..``: the tree
  (``list_repo_tree`` / ``list_repo_files``): entries ``{type, oid, size, path, lfs:
  {oid (sha256), size, pointerSize}}``, one page (no ``Link`` header).
* ``POST /api/models/{repo}/paths-info/{rev}`` (form ``paths=..``): same entries
  for the given paths (``get_paths_info``).
* ``HEAD|GET /{repo}/resolve/{rev}/{filename}``: the file (``hf_hub_download``),
  with ``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag`` (the sha256 for LFS files),
  ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges`` and HTTP ``Range``
  support (206 + ``Content-Range``).
* Unknown repos answer 404 with ``X-Error-Code: RepoNotFound``, as the Hub does.

Knobs for failure tests: ``listed_sha`` (what the listing claims), ``serve_bytes``
(what GETs really return: corruption), ``drop_after`` (on the first GET of a
file, send only N bytes of the body then close the connection), ``refuse_get``
(GETs of these files answer 403: a download that fails for good). Every request
is recorded in ``requests`` and body bytes per file in ``bytes_served``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    repo: str
    files: dict[str, bytes]  # path in repo -> content (what the listing describes)
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    listed_sha: dict[str, str] = field(default_factory=dict)  # overrides of the listed sha256
    serve_bytes: dict[str, bytes] = field(default_factory=dict)  # overrides of the served body
    drop_after: dict[str, int] = field(default_factory=dict)  # first GET: close after N bytes
    refuse_get: set[str] = field(default_factory=set)  # GET answers 403 (HEAD still works)
    requests: list[Recorded] = field(default_factory=list)
    bytes_served: Counter = field(default_factory=Counter)
    _dropped: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ views for tests

    def sha256(self, path: str) -> str:
        return self.listed_sha.get(path) or hashlib.sha256(self.files[path]).hexdigest()

    def gets(self, path: str) -> list[Recorded]:
        suffix = f"/resolve/{self.commit}/{path}"
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(suffix)]

    def entry(self, path: str) -> dict:
        data = self.files[path]
        e = {
            "type": "file",
            "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
            "size": len(data),
            "path": path,
        }
        if path.endswith(".gguf"):  # big files are LFS on the Hub
            e["lfs"] = {"oid": self.sha256(path), "size": len(data), "pointerSize": 134}
        return e


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; every answer has a Content-Length
    fake: FakeHub

    def log_message(self, format: str, *args: object) -> None:
        pass  # the tests read fake.requests instead

    def _record(self) -> None:
        with self.fake._lock:
            self.fake.requests.append(Recorded(self.command, self.path, self.headers.get("Range")))

    def _json(self, obj: object, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self, code: str) -> None:
        body = json.dumps({"error": f"{code}"}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # ------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._record()
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._record()
        self._route(head=True)

    def do_POST(self) -> None:
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        m = re.fullmatch(r"/api/models/(.+)/paths-info/([^/]+)", urlsplit(self.path).path)
        if not m or unquote(m.group(1)) != self.fake.repo:
            return self._not_found("RepoNotFound")
        wanted = form.get("paths", [])
        self._json([self.fake.entry(p) for p in wanted if p in self.fake.files])

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        fake = self.fake
        m = re.fullmatch(r"/api/models/(.+?)(?:/revision/([^/]+))?", path)
        if m and "/tree/" not in path:
            if m.group(1) != fake.repo:
                return self._not_found("RepoNotFound")
            return self._json(
                {
                    "id": fake.repo,
                    "sha": fake.commit,
                    "private": False,
                    "siblings": [{"rfilename": p} for p in fake.files],
                }
            )
        m = re.fullmatch(r"/api/models/(.+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            if m.group(1) != fake.repo:
                return self._not_found("RepoNotFound")
            prefix = (m.group(3) or "").strip("/")
            paths = [p for p in fake.files if not prefix or p.startswith(prefix + "/")]
            return self._json([fake.entry(p) for p in paths])
        m = re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", path)
        if m:
            if m.group(1) != fake.repo:
                return self._not_found("RepoNotFound")
            if m.group(3) not in fake.files:
                return self._not_found("EntryNotFound")
            return self._file(m.group(3), head)
        self._not_found("NotFound")

    def _file(self, name: str, head: bool) -> None:
        fake = self.fake
        if not head and name in fake.refuse_get:
            body = b"forbidden"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        listed = fake.files[name]
        body = fake.serve_bytes.get(name, listed)
        etag = fake.sha256(name)
        start = 0
        rng = self.headers.get("Range")
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                start = int(m.group(1))
        part = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", fake.commit)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Linked-Etag", f'"{etag}"')
        self.send_header("X-Linked-Size", str(len(listed)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(listed) if head else len(part)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if head:
            return
        cut = None
        with fake._lock:
            if name in fake.drop_after and name not in fake._dropped:
                fake._dropped.add(name)
                cut = fake.drop_after[name]
        if cut is not None:
            self.wfile.write(part[:cut])
            self.wfile.flush()
            with fake._lock:
                fake.bytes_served[name] += min(cut, len(part))
            # Hang up mid-body: the client sees fewer bytes than Content-Length promised.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(part)
        with fake._lock:
            fake.bytes_served[name] += len(part)


def closed_port() -> int:
    """A local port with nothing listening (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

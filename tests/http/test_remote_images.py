"""Remote image URLs on a live server: allowed hosts work, everything else is refused
after resolution and on every redirect hop, with one error text.

Two local HTTP servers: A on 127.0.0.1 (named by ``--remote-image-allow``) and B on
127.0.0.2 (loopback too, not named). B counts its requests: a refusal must happen before
any connection to it. Before, the server fetched loopback URLs and followed redirects to
them, and its error texts differed by cause (a port scanner's oracle).
"""

from __future__ import annotations

import http.server
import io
import threading

import openai
import pytest
from PIL import Image

from live_server import LiveServer, free_port
from vlmserve.http.remote_images import FETCH_FAILED


def png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


class Files(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(host: str, routes: dict) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("Handler", (Files,), {"routes": routes, "hits": hits})
    httpd = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, hits


@pytest.fixture(scope="module")
def sites():
    b, b_hits = serve("127.0.0.2", {"/secret.png": (200, {}, png(64))})
    b_url = f"http://127.0.0.2:{b.server_address[1]}"
    a, a_hits = serve("127.0.0.1", {
        "/photo.png": (200, {"Content-Type": "image/png"}, png(64)),
        "/huge.png": (200, {}, b"\x89PNG" + b"0" * 1_200_000),
        "/page.html": (200, {}, b"<html>not a picture</html>"),
        "/hop": (302, {"Location": "/photo.png"}, b""),
        "/to-b": (302, {"Location": f"{b_url}/secret.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
    })
    a_url = f"http://127.0.0.1:{a.server_address[1]}"
    yield a_url, b_url, b_hits
    a.shutdown()
    b.shutdown()


@pytest.fixture(scope="module")
def client(start_server) -> openai.OpenAI:
    server: LiveServer = start_server("--allow-remote-images", "--remote-image-allow",
                                      "127.0.0.1/32", "--image-max-mb", "1", "--no-ui")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)


def ask(client: openai.OpenAI, url: str):
    return client.chat.completions.create(model="m", max_tokens=2, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "what?"}]}])


def test_an_allowed_host_is_fetched_and_its_redirects_followed(client, sites):
    a_url, _, _ = sites
    assert ask(client, f"{a_url}/photo.png").x_vlmserve["images"] == 1
    assert ask(client, f"{a_url}/hop").x_vlmserve["images"] == 1


def test_refused_and_failed_fetches_all_say_the_same(client, sites):
    a_url, b_url, b_hits = sites
    urls = [f"{b_url}/secret.png",  # loopback, not named by --remote-image-allow
            f"{a_url}/to-b",  # an allowed host redirecting to a refused one
            f"http://localhost:{free_port()}/x.png",  # a name that resolves to loopback
            "http://169.254.169.254/latest/meta-data/",  # cloud metadata
            "http://[::ffff:127.0.0.2]/secret.png",  # IPv4-mapped IPv6
            f"{a_url}/nope.png", f"{a_url}/huge.png", f"{a_url}/page.html", f"{a_url}/loop",
            f"http://127.0.0.1:{free_port()}/closed.png"]
    answers = []
    for url in urls:
        with pytest.raises(openai.BadRequestError) as info:
            ask(client, url)
        answers.append(info.value.body["message"] if isinstance(info.value.body, dict)
                       and "message" in info.value.body else info.value.message)
    assert all(FETCH_FAILED in answer for answer in answers), answers
    assert b_hits == []  # nothing ever connected to the refused host

"""HTTPS: ``vlmserve cert`` makes a certificate, ``vlmserve serve --ssl-certfile/--ssl-keyfile``
serves the page and the API over TLS with it (clients trust only that file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from live_server import SRC, LiveServer, png_data_uri
from vlmserve.cli.main import main


def make_cert(folder: Path) -> tuple[Path, Path]:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "vlmserve.cli.main", "cert", "--out",
                           str(folder), "--name", "192.168.1.20"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--ssl-certfile" in done.stderr
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture(scope="module")
def tls_server(demo_model, tmp_path_factory: pytest.TempPathFactory):
    cert, key = make_cert(tmp_path_factory.mktemp("cert"))
    assert key.stat().st_mode & 0o077 == 0  # the key is the owner's alone
    log = tmp_path_factory.mktemp("server") / "server.log"
    # On every address and without a key, as someone trying it on a phone would start it.
    server = LiveServer(demo_model.model, demo_model.mmproj, log, "--ssl-certfile", str(cert),
                        "--ssl-keyfile", str(key), "--host", "0.0.0.0", "--log-level", "info",
                        ca=cert)
    yield server.wait_ready()
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(None), server.log(None)


def test_the_api_answers_over_tls(tls_server: LiveServer) -> None:
    with httpx.Client(verify=tls_server.verify) as http:
        client = openai.OpenAI(base_url=f"{tls_server.url}/v1", api_key="x", max_retries=0,
                               http_client=http, timeout=60)
        message = {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_data_uri(256, 256)}},
            {"type": "text", "text": "what is this?"}]}
        answer = client.chat.completions.create(model="m", messages=[message], max_tokens=4,
                                                temperature=0)
    assert answer.usage.completion_tokens >= 1
    assert tls_server.url.startswith("https://")


def test_the_page_is_served_over_tls_and_only_to_clients_that_trust_the_cert(
        tls_server: LiveServer) -> None:
    page = httpx.get(f"{tls_server.url}/", verify=tls_server.verify, timeout=10)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.url}/health", timeout=10)  # the system's trust store
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
        httpx.get(tls_server.url.replace("https://", "http://") + "/health", timeout=5)


def test_an_open_page_on_the_network_is_warned_about(tls_server: LiveServer) -> None:
    log = tls_server.log(None)
    assert "reachable from the network on 0.0.0.0 without a key" in log
    assert "https://127.0.0.1:" in log  # the banner names the https address


def test_half_a_tls_setting_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "cert.pem").write_text("x")
    assert main(["serve", "--ssl-certfile", str(tmp_path / "cert.pem")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("vlmserve: error: invalid settings: give both --ssl-certfile and "
                   "--ssl-keyfile, or neither")
    assert main(["serve", "--ssl-certfile", str(tmp_path / "no.pem"),
                 "--ssl-keyfile", str(tmp_path / "no.pem")]) == 1
    assert "file not found" in capsys.readouterr().err


def test_cert_refuses_to_overwrite_and_bad_names(tmp_path: Path, capsys) -> None:
    make_cert(tmp_path)
    assert main(["cert", "--out", str(tmp_path)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["cert", "--out", str(tmp_path / "b"), "--name", "http://x/"]) == 1
    assert "neither a host name nor an IP" in capsys.readouterr().err

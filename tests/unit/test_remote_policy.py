"""Which addresses a remote image may come from (``http/remote_images.py``), and a fetch
against real sockets on 127.0.0.1 / 127.0.0.2 (no server process needed)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from vlmserve.errors import ImageError, VlmserveError
from vlmserve.http.remote_images import FETCH_FAILED, RemotePolicy, fetch_image_bytes, is_public

REFUSED = ["127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
           "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::",
           "fd00::1", "fd00:ec2::254", "fe80::1", "ff02::1", "::ffff:127.0.0.1",
           "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:db8::1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address):
    ip = ipaddress.ip_address(address)
    assert not is_public(ip)
    assert not RemotePolicy().allows_address(ip)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert RemotePolicy().allows_address(ipaddress.ip_address(address))


def test_the_allow_list_names_networks_and_hosts():
    policy = RemotePolicy.parse("10.0.0.0/8, 127.0.0.1 images.LAN.")
    assert policy.allows_address(ipaddress.ip_address("10.9.9.9"))
    assert policy.allows_address(ipaddress.ip_address("::ffff:10.0.0.1"))  # mapped form
    assert policy.allows_address(ipaddress.ip_address("127.0.0.1"))
    assert not policy.allows_address(ipaddress.ip_address("127.0.0.2"))
    assert policy.allows_host("images.lan") and not policy.allows_host("other.lan")
    with pytest.raises(VlmserveError, match="remote-image-allow"):
        RemotePolicy.parse("10.0.0.0/8,not a host!")


def test_a_name_is_judged_by_what_it_resolves_to():
    # "localhost" is not an address: it is refused for resolving to loopback.
    with pytest.raises(ImageError) as info:
        asyncio.run(fetch_image_bytes("http://localhost:9/x.png", RemotePolicy(), 1000, 5))
    assert info.value.message == FETCH_FAILED


def test_a_refused_address_is_never_connected_to_and_an_allowed_one_is():
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"abc")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.2:{httpd.server_address[1]}/x"
    try:
        with pytest.raises(ImageError):
            asyncio.run(fetch_image_bytes(url, RemotePolicy(), 1000, 5))
        assert hits == []
        allowed = RemotePolicy.parse("127.0.0.2/32")
        assert asyncio.run(fetch_image_bytes(url, allowed, 1000, 5)) == b"abc"
        assert hits == ["/x"]
        with pytest.raises(ImageError):  # over the byte limit
            asyncio.run(fetch_image_bytes(url, allowed, 2, 5))
    finally:
        httpd.shutdown()

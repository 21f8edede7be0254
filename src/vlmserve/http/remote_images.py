"""Fetching a remote image without letting a client reach into the server's network.

With ``--allow-remote-images`` a request may name an http(s) URL. Fetching whatever it
names would let any client make the server call its own loopback services, the private
network and cloud metadata endpoints (SSRF). So every hop of a fetch is checked here:

- the host is resolved first and EVERY address it resolves to must be public (not
  loopback, private, link-local, multicast, reserved, unspecified, shared/CGNAT; IPv6
  forms that carry an IPv4 address, e.g. ``::ffff:127.0.0.1``, are judged by that
  address), unless ``--remote-image-allow`` names the host or a network holding it;
- the connection goes to the address that was checked (the URL's host is replaced by it;
  ``Host`` and TLS SNI keep the name), so a second DNS answer cannot swap it
  (DNS rebinding);
- redirects are followed by hand, at most ``MAX_REDIRECTS``, each hop checked the same;
- the whole fetch has a deadline and the body a byte limit.

Every refused or failed fetch raises the same ``ImageError`` text (the reason goes to the
server log), so answers cannot be used to scan hosts or ports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from vlmserve.errors import ImageError, VlmserveError

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
FETCH_FAILED = ("could not fetch an image from the URL (refused, unreachable, not an image, "
                "over the size limit or too slow); send the image inline as a "
                "data:image/...;base64,... URI")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class _Refused(Exception):
    """Why one fetch was refused or failed (logged, never shown to the client)."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address (and so is any IPv4 address it carries)."""
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped is not None or ip in _NAT64):
        return is_public(embedded_ipv4(ip))  # only a way to write that IPv4 address
    inner = embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_private or ip.is_unspecified)


@dataclass(frozen=True)
class RemotePolicy:
    """Which hosts remote images may come from: public addresses, plus what
    ``--remote-image-allow`` names (networks in CIDR form, and host names)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> RemotePolicy:
        """``"10.0.0.0/8, 127.0.0.1, images.lan"`` -> a policy; ``VlmserveError`` for an
        entry that is neither a network nor a host name."""
        networks, hosts = [], set()
        for entry in re.split(r"[,\s]+", text.strip().lower()):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.rstrip(".")
            if not _HOST_RE.fullmatch(name) or len(name) > 253:
                raise VlmserveError(f"--remote-image-allow: {entry!r} is neither a network "
                                    "(CIDR such as 10.0.0.0/8) nor a host name")
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        inner = embedded_ipv4(ip)
        for net in self.networks:
            if ip in net or (inner is not None and inner in net):
                return True
        return is_public(ip)


async def fetch_image_bytes(url: str, policy: RemotePolicy, max_bytes: int,
                            timeout_s: float) -> bytes:
    """The body at ``url`` (at most ``max_bytes``, within ``timeout_s``), or ``ImageError``
    with the one ``FETCH_FAILED`` text, whatever went wrong."""
    try:
        return await asyncio.wait_for(_follow(url, policy, max_bytes, timeout_s), timeout_s)
    except (_Refused, httpx.HTTPError, OSError, ValueError, UnicodeError,
            asyncio.TimeoutError) as exc:
        log.info("remote image not fetched (%s): %s", url[:200],
                 str(exc)[:200] or type(exc).__name__)
        raise ImageError(FETCH_FAILED) from None


async def _follow(url: str, policy: RemotePolicy, max_bytes: int, timeout_s: float) -> bytes:
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                 trust_env=False) as client:  # no proxy from the environment
        for _ in range(MAX_REDIRECTS + 1):
            target = httpx.URL(url)
            if target.scheme not in ("http", "https") or not target.host:
                raise _Refused(f"not an http(s) URL: {target.scheme}")
            address = await _checked_address(target, policy)
            pinned = target.copy_with(host=address)
            host_header = target.netloc.decode("ascii").rpartition("@")[2]
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = client.build_request("GET", pinned, headers={"Host": host_header, "Accept-Encoding": "identity"},
                                           extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise _Refused("a redirect without a Location")
                    url = urljoin(str(target), location)
                    continue
                if response.status_code != 200:
                    raise _Refused(f"HTTP {response.status_code}")
                return await _read_limited(response, max_bytes)
            finally:
                await response.aclose()
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


async def _checked_address(target: httpx.URL, policy: RemotePolicy) -> str:
    """The address to connect to: every address the host resolves to must be allowed."""
    host = target.host
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not (policy.allows_host(host) or policy.allows_address(literal)):
            raise _Refused(f"address {literal} is not public")
        return str(literal)
    port = target.port or (443 if target.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise _Refused(f"{host} does not resolve")
    if not policy.allows_host(host):
        refused = [a for a in addresses if not policy.allows_address(a)]
        if refused:
            raise _Refused(f"{host} resolves to {refused[0]}, which is not public")
    return str(addresses[0])


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Refused(f"Content-Length {declared} is over the limit")
    chunks, size = [], 0
    async for chunk in response.aiter_raw():  # identity asked: no decompression bomb
        size += len(chunk)
        if size > max_bytes:  # the header may lie or be absent
            raise _Refused("the body is over the limit")
        chunks.append(chunk)
    return b"".join(chunks)

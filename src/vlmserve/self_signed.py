"""A self-signed certificate for the names and addresses a phone uses (``cryptography``).

Browsers check the Subject Alternative Name, not the common name, so every host name
and IP address goes there; an IP must be an ``IPAddress`` entry, not a DNS name.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from vlmserve.errors import VlmserveError

_DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


def san_entries(names: list[str]) -> list:
    """Names and addresses as SAN entries, without duplicates, in order."""
    from cryptography import x509

    entries: list = []
    seen: set[str] = set()
    for raw in [*_DEFAULT_NAMES, socket.gethostname(), *names]:
        name = raw.strip()
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if any(c.isspace() or c in "/:@" for c in name):
                raise VlmserveError(f"--name {raw!r} is neither a host name nor an IP "
                                    "address") from None
            entries.append(x509.DNSName(name))
    return entries


def write_self_signed(out: Path, names: list[str], days: int = 825, force: bool = False,
                      ) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (key readable by the owner only); their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = out.expanduser()
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise VlmserveError(f"{path} exists; pass --force to replace it")
    san = san_entries(names)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vlmserve (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    try:
        out.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    except OSError as exc:
        raise VlmserveError(f"cannot write the certificate into {out}: {exc.strerror}"
                            ) from None
    return cert_path, key_path

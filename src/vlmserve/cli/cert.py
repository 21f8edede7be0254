"""``vlmserve cert``: a self-signed certificate and key for serving HTTPS on the local network.

Phones open the camera only on secure origins (HTTPS, or localhost), and a box on the
LAN has no public name a certificate authority would sign. One command makes a
certificate for the names and addresses the phone will use; the phone is told to trust
it once (README: serving to a phone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlmserve.errors import VlmserveError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cert", help="make a self-signed HTTPS certificate for serving to a phone on the LAN",
        description="Write cert.pem and key.pem (a self-signed certificate valid for "
        "localhost, 127.0.0.1, this machine's host name and every --name given), then "
        "serve with --ssl-certfile DIR/cert.pem --ssl-keyfile DIR/key.pem.")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="folder to write cert.pem and key.pem into (default: here)")
    p.add_argument("--name", action="append", default=[], metavar="NAME_OR_IP",
                   help="a host name or IP address the phone uses to reach this machine, "
                   "e.g. --name 192.168.1.20 (repeatable)")
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmserve.self_signed import write_self_signed  # cryptography: only here

    if args.days < 1:
        raise VlmserveError("--days must be at least 1")
    cert, key = write_self_signed(args.out, args.name, args.days, args.force)
    print(f"vlmserve: wrote {cert} and {key}\n"
          f"vlmserve: serve with --ssl-certfile {cert} --ssl-keyfile {key}", file=sys.stderr)
    return 0

"""The bad-input matrix: send every case of ``bad_input_cases`` to a live server on the
loopback and report, per case, the status and the message it got, and that ``/health``
still answers 200 after it.

Loopback only: this tool sends hostile requests and must never be pointed elsewhere.
``scripts/bad_input_matrix.py`` runs it and prints the Markdown table
(docs/reliability-input.md is its output).
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from vlmserve.bench.bad_input_cases import Case, cases
from vlmserve.errors import VlmserveError


@dataclass(frozen=True)
class Outcome:
    """What one case got."""

    case: Case
    status: int
    message: str  # the error's message, or "ok"
    health: int  # /health's status right after
    ms: float  # the case's request, start to answer

    @property
    def as_expected(self) -> bool:
        return self.status == self.case.expect and self.health == 200


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash; ``VlmserveError`` unless its host is a loopback
    address (``localhost`` counts)."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise VlmserveError(f"--url must be a loopback address (127.0.0.1, ::1, localhost), "
                            f"not {host or url!r}: this tool sends hostile requests")
    return url.rstrip("/")


def _encode(case: Case) -> bytes | None:
    if case.method == "GET":
        return None
    if isinstance(case.body, bytes):
        return case.body
    return json.dumps(case.body).encode()  # ensure_ascii: lone surrogates as \ud800


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:120] or "(empty body)"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return "ok"


def run_case(client: httpx.Client, case: Case) -> Outcome:
    started = time.perf_counter()
    response = client.request(case.method, case.path, content=_encode(case),
                              headers={"Content-Type": case.content_type})
    ms = (time.perf_counter() - started) * 1000
    health = client.get("/health").status_code
    return Outcome(case, response.status_code, _message(response), health, ms)


def run_matrix(url: str, big_text_mb: float = 20.0, timeout_s: float = 60.0,
               api_key: str | None = None) -> list[Outcome]:
    """Every case against the server at ``url`` (loopback only), in order."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=check_loopback(url), timeout=timeout_s,
                      headers=headers) as client:
        return [run_case(client, case) for case in cases(big_text_mb)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(outcomes: list[Outcome]) -> str:
    """The table: one row per case (input, status, message, /health after, time to the
    answer on the client's clock)."""
    rows = ["| # | input | status | message | /health after | ms |",
            "|---|---|---|---|---|---|"]
    for n, o in enumerate(outcomes, start=1):
        mark = "" if o.as_expected else f" (expected {o.case.expect})"
        rows.append(f"| {n} | {_cell(o.case.name)} | {o.status}{mark} | "
                    f"{_cell(o.message)[:200]} | {o.health} | {o.ms:.0f} |")
    return "\n".join(rows)

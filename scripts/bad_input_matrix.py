#!/usr/bin/env python3
"""Print the bad-input matrix of a live vlmserve server on the loopback, as Markdown.

    vlmserve serve --model M --mmproj P --port 8000 &
    python scripts/bad_input_matrix.py --url http://127.0.0.1:8000 > docs/reliability-input.md

Exits 1 when a case got another status than expected or left /health other than 200.
"""

from __future__ import annotations

import argparse
import sys

import httpx

from vlmserve.bench.bad_input import markdown, run_matrix
from vlmserve.errors import VlmserveError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the server (loopback only)")
    parser.add_argument("--api-key", help="the server's API key, if it has one")
    parser.add_argument("--big-text-mb", type=float, default=20.0,
                        help="size of the oversized-text case (default 20)")
    args = parser.parse_args()
    try:
        outcomes = run_matrix(args.url, args.big_text_mb, api_key=args.api_key)
    except VlmserveError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, httpx.HTTPError) as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(markdown(outcomes))
    bad = [o for o in outcomes if not o.as_expected]
    print(f"\n{len(outcomes)} cases, {len(bad)} not as expected", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

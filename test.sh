#!/usr/bin/env bash
# Installs everything the tests need (idempotent, reuses .venv) and runs them.
# Extra arguments go to pytest, e.g. ./test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh --test
exec .venv/bin/python -m pytest "$@"

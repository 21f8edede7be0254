#!/usr/bin/env bash
# Idempotent install into ./.venv: the package, llama-cpp-python (built from
# source by pip; the wheel is cached after the first ~5 minute build), and with
# --test the test tools, the Ray extra (vlmserve[ray]) and Debian's chromium for the
# browser tests.
#
# GPU builds: pass llama.cpp's CMake flags through CMAKE_ARGS, e.g.
#   CMAKE_ARGS="-DGGML_CUDA=on" ./scripts/install.sh     (NVIDIA)
#   CMAKE_ARGS="-DGGML_METAL=on" ./scripts/install.sh    (Apple)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv"
  "$py" -m venv .venv
fi

extras="[video]"
# The tests cover the Ray deployment too (tests/cluster), so --test brings the ray extra.
[ "$want_test" = 1 ] && extras="[video,test,ray]"
# Re-run pip only when the dependency list or the requested extras changed.
stamp=".venv/.vlmserve-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)${extras}${CMAKE_ARGS:-}"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  echo "[install] installing vlmserve${extras} (first time builds llama.cpp: ~5 min on 2 cores)"
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
  .venv/bin/python -m pip install -q --upgrade pip wheel
  .venv/bin/python -m pip install -q -e ".${extras}"
  echo "$want" > "$stamp"
fi

if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "[install] installing Debian chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi

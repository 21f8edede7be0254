#!/usr/bin/env bash
# Start vlmserve: the image Q&A page on http://127.0.0.1:7860 and the OpenAI-compatible
# API on http://127.0.0.1:7860/v1, in one process.
#
#   ./start.sh                                  # install if needed, find or get a model, serve
#   ./start.sh --model M.gguf --mmproj P.gguf   # a model of your own
#   HOST=0.0.0.0 ./start.sh --api-key SECRET    # reachable from other machines
#   PORT=8080 ./start.sh --parallel 2           # other flags: .venv/bin/vlmserve serve --help
#
# Which model: --model/--mmproj, else VLMSERVE_MODEL/VLMSERVE_MMPROJ, else the default in
# ~/.cache/vlmserve/models (see `vlmserve models`). With none, `vlmserve pull` downloads Qwen3-VL; when that is
# not possible (offline), a tiny random-weight demo model is written to
# ~/.cache/vlmserve/demo and served with a loud "demo" banner: the page works, the
# answers are gibberish.
set -euo pipefail
cd "$(dirname "$0")"

./scripts/install.sh

py=.venv/bin/python
vlmserve=(.venv/bin/python -m vlmserve.cli.main)

say() { printf '[start] %s\n' "$*" >&2; }

# Flags given on the command line win over the environment.
has_flag() {
  local flag=$1; shift
  local arg
  for arg in "$@"; do
    case "$arg" in "$flag" | "$flag="*) return 0 ;; esac
  done
  return 1
}

extra=()
if [ -n "${HOST:-}" ] && ! has_flag --host "$@"; then
  extra+=(--host "$HOST")
fi
if [ -n "${PORT:-}" ] && ! has_flag --port "$@"; then
  extra+=(--port "$PORT")
fi

have_model() {
  has_flag --model "$@" && return 0
  [ -n "${VLMSERVE_MODEL:-}" ] && return 0
  # The same lookup `vlmserve serve` does when no model is named (the models folder).
  "$py" -c 'from vlmserve.cli.engine_args import resolve_model_paths as r; r(None, None)' \
    >/dev/null 2>&1
}

if ! have_model "$@"; then
  got_model=0
  if ! has_flag --demo "$@"; then
    say "no model found: downloading Qwen3-VL with 'vlmserve pull' (Ctrl-C to stop)"
    if "${vlmserve[@]}" pull; then
      got_model=1
    else
      say "download failed (offline?): falling back to the demo model"
    fi
  fi
  if [ "$got_model" = 0 ]; then
    demo_dir="${VLMSERVE_DEMO_DIR:-$HOME/.cache/vlmserve/demo}"
    if [ ! -f "$demo_dir/model.gguf" ] || [ ! -f "$demo_dir/mmproj.gguf" ]; then
      say "writing the tiny demo model to $demo_dir"
      "${vlmserve[@]}" demo-model "$demo_dir" >&2
    fi
    cat >&2 <<'BANNER'

  ##########################################################################
  #  DEMO MODE: no Qwen3-VL model on this machine, serving a tiny model    #
  #  with RANDOM weights. The page and the API work; answers are gibberish.#
  #  Get the real model:  .venv/bin/vlmserve pull   (see README)           #
  ##########################################################################

BANNER
    extra+=(--model "$demo_dir/model.gguf" --mmproj "$demo_dir/mmproj.gguf")
    has_flag --demo "$@" || extra+=(--demo)
  fi
fi

# (`vlmserve serve` itself warns when it listens beyond this machine without an API key.)
# exec: Ctrl-C and SIGTERM go straight to the server, which shuts down cleanly.
# ${extra[@]+...}: an empty array is "unbound" to set -u in the bash 3 of macOS.
exec "${vlmserve[@]}" serve ${extra[@]+"${extra[@]}"} "$@"

#!/usr/bin/env bash
# Build llama-server from the llama.cpp that llama-cpp-python 0.3.36 vendors, so the
# stall benchmark can measure the same llama.cpp behind its own HTTP server.
#
#   scripts/build-llama-server.sh DEST
#
# Leaves DEST/llama.cpp-build/bin/llama-server. The binaries find their shared libraries
# in that bin/ folder through rpath: run them from there. Idempotent: a finished build is
# kept, an interrupted one resumes (cmake/ninja only redo what is missing).
set -euo pipefail

VERSION="0.3.36"
DEST="${1:?usage: $0 DEST}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
CACHE="$DEST/sdist-cache"
SRC="$DEST/llama.cpp-src"
BUILD="$DEST/llama.cpp-build"
JOBS="${JOBS:-$(nproc)}"

if [ -x "$BUILD/bin/llama-server" ] && [ "${FORCE:-0}" != "1" ]; then
    echo "already built: $BUILD/bin/llama-server"
    exit 0
fi

# 1. the source distribution (pip's own client; a cached copy is reused)
TARBALL="$(ls "$CACHE"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)"
if [ -z "$TARBALL" ]; then
    mkdir -p "$CACHE"
    python3 -m pip download --no-deps --no-binary :all: \
        "llama-cpp-python==$VERSION" -d "$CACHE"
    TARBALL="$CACHE/llama_cpp_python-$VERSION.tar.gz"
fi

# 2. its vendored llama.cpp, extracted once (a marker file says the copy is whole)
if [ ! -f "$SRC/.extracted" ]; then
    rm -rf "$SRC" "$SRC.tmp"
    mkdir -p "$SRC.tmp"
    tar -xzf "$TARBALL" -C "$SRC.tmp" --strip-components=3 \
        "llama_cpp_python-$VERSION/vendor/llama.cpp"
    mv "$SRC.tmp" "$SRC"
    touch "$SRC/.extracted"
fi

# 3. configure (once) and build only what the benchmark needs
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    GEN=()
    command -v ninja >/dev/null && GEN=(-G Ninja)
    cmake -S "$SRC" -B "$BUILD" "${GEN[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DGGML_NATIVE=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
fi
cmake --build "$BUILD" --target llama-server -j "$JOBS"

test -x "$BUILD/bin/llama-server"
echo "built: $BUILD/bin/llama-server (run it from $BUILD/bin)"

#!/usr/bin/env bash
# Installs llmint8's build dependencies (Debian/Ubuntu packages) when missing, then builds into
# build/ (or $BUILD_DIR). Extra CMake arguments: LLMINT8_CMAKE_ARGS="-DLLMINT8_CUDA=OFF ...".
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tools/lib/apt.sh
source tools/lib/apt.sh
apt_install_missing setup cmake g++ make pkg-config \
  libgtest-dev libgmock-dev libbenchmark-dev \
  nlohmann-json3-dev libcli11-dev libsentencepiece-dev libopenblas-dev libpcre2-dev libutf8proc-dev

build="${BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${LLMINT8_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
echo "setup: built $build/llmint8" >&2

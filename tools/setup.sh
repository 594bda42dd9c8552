#!/usr/bin/env bash
# Installs llmint8's build dependencies (Debian/Ubuntu packages) when missing, then builds into
# build/ (or $BUILD_DIR). Extra CMake arguments: LLMINT8_CMAKE_ARGS="-DLLMINT8_CUDA=OFF ...".
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make pkg-config
          libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev libsentencepiece-dev libopenblas-dev libpcre2-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build="${BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${LLMINT8_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
echo "setup: built $build/llmint8" >&2

#!/usr/bin/env bash
# Runs the test suite of an existing build (tools/setup.sh makes it). GPU tests carry the CTest
# label `gpu`; on a machine without a usable NVIDIA GPU they are skipped, and this says so.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
select=()
if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  echo "tests: no GPU on this machine: skipping the GPU tests (CTest label 'gpu')"
  select=(-LE gpu)
fi
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "${select[@]}"

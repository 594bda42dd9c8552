#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan) into build-fuzz/ and runs
# TARGET (or every target: all) for SECONDS each, one process, one worker:
#   bash tools/fuzz.sh all 45
#   bash tools/fuzz.sh fuzz_safetensors 600
# Corpora: build-fuzz/corpus/<target>/ (kept between runs, never committed), seeded from the
# hand-written seeds in tests/fuzz/seeds/<target>/ and from seeds generated here out of
# ../shared (small files derived from the real stories260K / gpt2 files, not copied into the
# repository). A crash, leak, timeout or out-of-memory stops with the input written to
# build-fuzz/artifacts/ and a non-zero exit. FUZZ_ARGS adds libFuzzer flags; BUILD_DIR_FUZZ moves
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ $# -ne 2 ]; then
  echo "usage: $0 TARGET|all SECONDS" >&2
  exit 2
fi
which_target=$1
seconds=$2
build="${BUILD_DIR_FUZZ:-build-fuzz}"
shared="${LLMINT8_SHARED_DIR:-$root/../shared}"

# clang with its sanitizer/libFuzzer runtime, and libomp (the top-level CMakeLists finds
# OpenMP for the main library even though the fuzz targets do not use it).
# shellcheck source=tools/lib/apt.sh
source tools/lib/apt.sh
apt_install_missing fuzz clang libclang-rt-14-dev libomp-14-dev

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMINT8_FUZZ=ON -DLLMINT8_CUDA=OFF \
    -DLLMINT8_BUILD_TESTS=OFF -DLLMINT8_BUILD_BENCH=OFF -DLLMINT8_SHARED_DIR="$shared" >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target fuzz_all >/dev/null

targets=()
for f in tests/fuzz/fuzz_*.cpp; do
  t=$(basename "$f" .cpp)
  if [ "$which_target" = all ] || [ "$which_target" = "$t" ]; then targets+=("$t"); fi
done
if ((${#targets[@]} == 0)); then
  echo "fuzz: no target '$which_target' (have: $(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp//' | tr '\n' ' '))" >&2
  exit 2
fi

# Seeds generated from the real files in ../shared (into the build folder only).
gen="$build/seeds"
rm -rf "$gen"
mkdir -p "$gen"
if [ -d "$shared/models" ] && command -v python3 >/dev/null; then
  python3 "$root/tests/fuzz/make_seeds.py" "$shared" "$gen"
else
  echo "fuzz: $shared/models absent (or no python3): hand-written seeds only" >&2
fi

export LLMINT8_SHARED_DIR="$shared"  # where fuzz_tokenizer_encode finds the tokenizers
status=0
mkdir -p "$build/artifacts"
for t in "${targets[@]}"; do
  if [ "$t" = fuzz_tokenizer_encode ] && [ ! -f "$shared/models/gpt2-tokenizer/tokenizer.json" ]; then
    echo "fuzz $t: skipped: it encodes with the real tokenizers of $shared/models, absent here"
    continue
  fi
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  seed_dirs=()
  [ -d "tests/fuzz/seeds/$t" ] && seed_dirs+=("tests/fuzz/seeds/$t")
  [ -d "$gen/$t" ] && seed_dirs+=("$gen/$t")
  dict=()  # the target's own dictionary, else the JSON one
  if [ -f "tests/fuzz/$t.dict" ]; then
    dict=(-dict="tests/fuzz/$t.dict")
  elif [ -f tests/fuzz/json.dict ]; then
    dict=(-dict=tests/fuzz/json.dict)
  fi
  log="$build/$t.log"
  echo "== fuzz $t for ${seconds}s"
  set +e
  # shellcheck disable=SC2086
  "$build/tests/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" "${dict[@]}" ${FUZZ_ARGS:-} \
    "$corpus" "${seed_dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  files=$(find "$corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: ok: ${runs:-?} executions in ${secs:-?} s, corpus $files files ($(du -sh "$corpus" | cut -f1))"
  else
    status=1
    echo "fuzz $t: FAILED (exit $rc) after ${runs:-?} executions; the input is in $build/artifacts/; log $log:"
    grep -E "ERROR|SUMMARY|runtime error|invariant|Test unit written|uncaught" "$log" | head -20 || true
    tail -40 "$log"
  fi
done
exit $status

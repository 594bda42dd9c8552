#!/usr/bin/env bash
# Long fuzz runs on the lent machine's CPU cores (16 there, 2 here): the libFuzzer binaries are
# built HERE with clang (tools/fuzz.sh), then travel with what they read. Prepare, on this machine:
#
#   bash tools/fuzz.sh fuzz_config 1        # builds every target into build-fuzz/
#   mkdir -p .fuzzcarry/bin .fuzzcarry/shared/models/{stories260K,gpt2-tokenizer}
#   for t in fuzz_safetensors fuzz_tokenizer_json fuzz_int8_checkpoint fuzz_tokenizer_encode; do
#     strip --strip-debug -o .fuzzcarry/bin/$t build-fuzz/tests/fuzz/$t; done
#   cp ../shared/models/stories260K/{tokenizer.json,tokenizer_config.json,tokenizer.model,config.json} \
#     .fuzzcarry/shared/models/stories260K/
#   cp ../shared/models/gpt2-tokenizer/{tokenizer.json,tokenizer_config.json,config.json} \
#     .fuzzcarry/shared/models/gpt2-tokenizer/
#   cp -r build-fuzz/seeds .fuzzcarry/seeds  # the seeds tools/fuzz.sh generated from ../shared
#   mkdir -p .fuzzcarry/lib && cp -L /usr/lib/llvm-14/lib/libomp.so.5 .fuzzcarry/lib/
#   echo /.fuzzcarry/ >> .git/info/exclude
#
# then call the device tool with carry [".carry", ".fuzzcarry"] and
#
#   bash tools/gpu/fuzz_on_device.sh SECONDS TARGET:WORKERS [TARGET:WORKERS ...]
#
# Each target runs WORKERS independent libFuzzer processes (one worker each, the same flags as
# tools/fuzz.sh: -rss_limit_mb=2048 -timeout=10, the target's dictionary) on one shared corpus
# directory (libFuzzer reloads it, so the workers exchange what they find). The executions of a
# target are the sum over its processes' final stats. Any crash, leak, timeout or out-of-memory
# stops that process with the input in $OUT/artifacts and is reported. Summary: $OUT/fuzz_summary.txt.
# (The other shared libraries the binaries need come from .carry/debs, as in run_on_device.sh.)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/artifacts"
[ $# -ge 2 ] || { echo "usage: $0 SECONDS TARGET:WORKERS..." >&2; exit 2; }
seconds=$1
shift

DEPS=/opt/deps
mkdir -p $DEPS
for f in .carry/debs/*.deb; do dpkg -x "$f" $DEPS || exit 1; done
LIBD=$DEPS/usr/lib/x86_64-linux-gnu
# libomp.so.5 (LLVM's OpenMP runtime, which the clang build links) travels in .fuzzcarry/lib.
export LD_LIBRARY_PATH=$PWD/.fuzzcarry/lib:$LIBD:$LIBD/openblas-pthread:${LD_LIBRARY_PATH:-}
export LLMINT8_SHARED_DIR=$PWD/.fuzzcarry/shared
echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $seconds s"

work=/tmp/fuzzwork
pids=()
for spec in "$@"; do
  t=${spec%%:*}
  n=${spec#*:}
  bin=.fuzzcarry/bin/$t
  [ -x "$bin" ] || { echo "no $bin" >&2; exit 2; }
  ldd "$bin" | grep -q "not found" && { ldd "$bin" | grep "not found"; exit 1; }
  corpus=$work/corpus/$t
  mkdir -p "$corpus" "$work/logs"
  seeds=()
  [ -d "tests/fuzz/seeds/$t" ] && seeds+=("tests/fuzz/seeds/$t")
  [ -d ".fuzzcarry/seeds/$t" ] && seeds+=(".fuzzcarry/seeds/$t")
  dict=()
  if [ -f "tests/fuzz/$t.dict" ]; then dict=(-dict="tests/fuzz/$t.dict"); else dict=(-dict=tests/fuzz/json.dict); fi
  for ((w = 0; w < n; ++w)); do
    # The first worker also reads the seed folders; the others start from the shared corpus.
    extra=()
    [ $w -eq 0 ] && extra=("${seeds[@]}")
    "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$OUT/artifacts/$t-$w-" "${dict[@]}" "$corpus" "${extra[@]}" \
      >"$work/logs/$t.$w.log" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; done

status=0
{
  echo "| target | processes | executions | corpus files | peak RSS per process (MB) | result |"
  echo "|---|---:|---:|---:|---:|---|"
  for spec in "$@"; do
    t=${spec%%:*}
    n=${spec#*:}
    total=0
    rss=0
    bad=0
    for ((w = 0; w < n; ++w)); do
      log=$work/logs/$t.$w.log
      r=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
      m=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
      total=$((total + ${r:-0}))
      [ "${m:-0}" -gt "$rss" ] && rss=${m:-0}
      if grep -qE "ERROR: |SUMMARY: |runtime error|Test unit written|uncaught" "$log"; then
        bad=1
        cp "$log" "$OUT/"
      fi
    done
    result=ok
    [ $bad -eq 1 ] && { result="FINDING (see $t.*.log)"; status=1; }
    echo "| $t | $n | $total | $(find "$work/corpus/$t" -type f | wc -l) | $rss | $result |"
  done
} | tee "$OUT/fuzz_summary.txt"
exit $status

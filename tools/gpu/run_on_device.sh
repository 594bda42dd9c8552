#!/usr/bin/env bash
# Builds llmint8 with CUDA on the lent GPU machine, runs the GPU tests, optionally the
# compute-sanitizer memcheck of the primitive tests, and the GPU benchmark, in ONE call.
#
# The device image has nvcc, CMake and ninja but none of the project's Debian -dev packages, so
# they travel as .deb files: on this machine, once,
#   mkdir -p .carry/debs && cd .carry/debs && apt-get download nlohmann-json3-dev libcli11-dev \
#     libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libopenblas-dev libopenblas0 \
#     libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libgtest-dev libgmock-dev \
#     googletest libbenchmark-dev libbenchmark1debian pkgconf pkgconf-bin libpkgconf3 \
#     libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2
# then call the device tool with carry [".carry"] and the command
#   bash tools/gpu/run_on_device.sh [test] [sanitize] [racecheck] [profile] [bench] [quick]
#   bash tools/gpu/run_on_device.sh model [modelbench] [hf]
#   bash tools/gpu/run_on_device.sh all modelcheck    (memcheck of GPU model tests: MODELCHECK_FILTER)
# (no argument = test bench). `model` builds only the GPU model's targets and runs
# test_cuda_model; `modelbench` runs bench_cuda_model (Llama-3-8B-shaped, synthetic weights, int8
# vs fp16); `hf` runs tools/gpu/hf_baseline.py (transformers fp16 on the same GPU). Logs go to $OUT (build.log, test.log, sanitize.log, bench.log);
# the benchmark's table is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
ARGS=" ${*:-test bench} "
has() { [[ "$ARGS" == *" $1 "* ]]; }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
grep PRETTY_NAME /etc/os-release; ldd --version | head -1; nvcc --version | tail -1
cmake --version | head -1; ninja --version

echo "== dependencies from .carry/debs -> /opt/deps"
DEPS=/opt/deps
mkdir -p $DEPS
for f in .carry/debs/*.deb; do dpkg -x "$f" $DEPS || { echo "dpkg -x $f failed"; exit 1; }; done
LIBD=$DEPS/usr/lib/x86_64-linux-gnu
# .pc files name prefix=/usr: point them at the unpacked tree.
find $DEPS -name '*.pc' -exec sed -i "s#^prefix=/usr#prefix=$DEPS/usr#" {} +
export PKG_CONFIG_PATH=$LIBD/pkgconfig:$LIBD/openblas-pthread/pkgconfig:$DEPS/usr/share/pkgconfig
export LD_LIBRARY_PATH=$LIBD:$LIBD/openblas-pthread:${LD_LIBRARY_PATH:-}
PKGCONF=$(command -v pkg-config || echo $DEPS/usr/bin/pkgconf)

echo "== configure + build"
B=build-gpu
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMINT8_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=$DEPS/usr -DPKG_CONFIG_EXECUTABLE=$PKGCONF \
  -DCMAKE_LIBRARY_PATH="$LIBD/openblas-pthread;$LIBD" -DBLA_VENDOR=OpenBLAS \
  >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
TARGETS="test_backend_cuda bench_cuda_linear"
for t in tests/test_cuda_*.cpp; do [ -e "$t" ] && TARGETS="$TARGETS $(basename "$t" .cpp)"; done
if has model; then TARGETS="test_cuda_model bench_cuda_model"; fi
if has all; then TARGETS="$TARGETS bench_cuda_model"; fi
if has envab && ! has all && ! has model; then TARGETS="test_cuda_model bench_cuda_model"; fi
cmake --build $B -j16 --target $TARGETS >>"$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -40; tail -20 "$OUT/build.log"; exit 1; }
echo "built: $TARGETS"

rc=0
if has test; then
  echo "== GPU tests"
  for t in $TARGETS; do
    [[ $t == test_* ]] || continue
    ./$B/tests/$t --gtest_brief=1 2>&1 | tee -a "$OUT/test.log" | tail -25 || rc=1
  done
fi
if has sanitize; then
  echo "== compute-sanitizer memcheck (primitives)"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 ./$B/tests/test_backend_cuda \
    --gtest_brief=1 --gtest_filter='*Quantize*:*Gemm*:*Dequantize*:*Int8Linear*' \
    >"$OUT/sanitize.log" 2>&1; s=$?
  tail -8 "$OUT/sanitize.log"; echo "compute-sanitizer exit: $s"; [ $s -eq 0 ] || rc=1
fi
if has modelcheck; then
  # compute-sanitizer memcheck of GPU model tests (MODELCHECK_FILTER, MODELCHECK_TIMEOUT s).
  echo "== compute-sanitizer memcheck (model tests)"
  timeout ${MODELCHECK_TIMEOUT:-300} stdbuf -oL compute-sanitizer --tool memcheck --error-exitcode 3 ./$B/tests/test_cuda_model \
    --gtest_brief=1 --gtest_filter="${MODELCHECK_FILTER:-CudaModel.*:Fixtures/CudaFamily.*/0}" >"$OUT/modelcheck.log" 2>&1; s=$?
  grep -E "ERROR SUMMARY|tests? ran|PASSED|FAILED|Invalid|out of bounds" "$OUT/modelcheck.log" | head -12
  echo "memcheck (model tests) exit: $s"; [ $s -eq 0 ] || rc=1
fi
if has racecheck; then
  # Shared-memory races (racecheck) in every kernel the primitive and model tests launch; the
  # model tests on the llama fixture only (racecheck is slow), the batched step included.
  echo "== compute-sanitizer racecheck"
  # RACECHECK_SPECS="test:filter ..." and RACECHECK_TIMEOUT (s per test binary) narrow a call.
  specs=${RACECHECK_SPECS:-"test_backend_cuda:*Int8Linear*:*Quantize* test_cuda_suite:* test_cuda_model:Fixtures/CudaFamily.BatchedStepsEqualSeparateSessions/0:CudaModel.LongPromptMatchesCpu"}
  for spec in $specs; do
    t=${spec%%:*}; f=${spec#*:}
    [ -x ./$B/tests/$t ] || continue
    timeout ${RACECHECK_TIMEOUT:-150} stdbuf -oL compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 3 ./$B/tests/$t \
      --gtest_brief=1 --gtest_filter="$f" >"$OUT/racecheck_$t.log" 2>&1; s=$?
    echo "$t: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck_$t.log" | tail -1) (exit $s)"
    grep -E "tests? ran|PASSED|FAILED" "$OUT/racecheck_$t.log" | tail -2
    [ $s -eq 0 ] || rc=1
  done
fi
if has profile; then
  echo "== ncu: per-kernel times of a few int8_linear calls (bench_cuda_linear --profile)"
  timeout 240 ncu --clock-control none --metrics gpu__time_duration.sum ./$B/bench/bench_cuda_linear --profile \
    >"$OUT/ncu.log" 2>&1
  awk '/^profiled/ {print; next}
       /Context [0-9]+, Stream/ {n=$0; sub(/^ +/, "", n); sub(/\(.*/, "", n); g=$0; sub(/.*\) \(/, "(", g); sub(/, Context.*/, "", g); name=n " " g}
       /gpu__time_duration.sum/ {print "  " $NF " us  " name}' "$OUT/ncu.log" | cut -c1-160 | tail -70
fi
if has bench; then
  echo "== benchmark"
  Q=""; has quick && Q="--quick"
  ./$B/bench/bench_cuda_linear $Q 2>"$OUT/bench_progress.log" | tee "$OUT/bench.log"
  tail -3 "$OUT/bench_progress.log"
fi
if has decodeab; then
  # DECODE_AB="R1 R2 ...": the decode shapes with LLMINT8_CUDA_DECODE_ROWS=R (M <= R on the row GEMV,
  # the rest on the split-K MMA GEMV; 0 = all split-K).
  for r in ${DECODE_AB:-0 4}; do
    echo "== decode GEMV, LLMINT8_CUDA_DECODE_ROWS=$r"
    LLMINT8_CUDA_DECODE_ROWS=$r ./$B/bench/bench_cuda_linear --decode 2>/dev/null | tee "$OUT/decode_rows$r.log" | grep -E "^\|" | head -40
  done
fi
if has model; then
  echo "== GPU model tests"
  ./$B/tests/test_cuda_model 2>&1 | tee "$OUT/model_test.log" | grep -E "^\[(llama|qwen2|gpt2|opt|gpt_neox|bloom)\]|FAILED|PASSED|SKIPPED|Failure|error|Expected|Which is|actual" | head -60 || rc=1
  grep -q "FAILED" "$OUT/model_test.log" && rc=1
fi
if has modelbench; then
  echo "== bench_cuda_model"
  ./$B/bench/bench_cuda_model 2>&1 | tee "$OUT/model_bench.log"
fi
if has envab; then
  # ENV_AB="A=1 A=0,B=2 ...": bench_cuda_model (PREC, default int8,fp16; BATCHES, default 1) once per
  # setting (comma-separated variables), for A/B measurements of the tuning overrides.
  for spec in ${ENV_AB:-LLMINT8_CUDA_DECODE_ATTENTION=0 LLMINT8_CUDA_DECODE_ATTENTION=1}; do
    echo "== bench_cuda_model, $spec"
    env ${spec//,/ } ./$B/bench/bench_cuda_model --precisions ${PREC:-int8,fp16} --batches ${BATCHES:-1} 2>&1 \
      | tee "$OUT/envab_${spec//[^A-Za-z0-9]/_}.log" | grep -E "^\||decode speed" | grep -v -- "---" | tail -8
  done
fi
if has modelprofile; then
  echo "== ncu: GPU model kernels, 2 layers, decode steps without graphs (per-kernel total us)"
  LLMINT8_CUDA_NO_GRAPH=1 timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum \
    ./$B/bench/bench_cuda_model --layers 2 --prompt 2048 --decode 8 --reps 1 --precisions ${PREC:-int8} >"$OUT/ncu_model.log" 2>&1
  awk '/Context [0-9]+, Stream/ {n=$0; sub(/^ +/, "", n); sub(/[(<].*/, "", n); name=n}
       /gpu__time_duration.sum/ {v=$NF; gsub(",", "", v); u=$(NF-1); if (u=="ms") v*=1000; if (u=="ns") v/=1000; t[name]+=v; c[name]++; if (!(name in mn) || v<mn[name]) mn[name]=v}
       END {for (k in t) printf "%10.1f us total %6d x  min %8.2f us  %s\n", t[k], c[k], mn[k], k}' "$OUT/ncu_model.log" | sort -rn | head -30
fi
if has hf; then
  echo "== Hugging Face transformers fp16 baseline"
  PYTHONUNBUFFERED=1 timeout 300 python3 tools/gpu/hf_baseline.py 2>&1 | grep -v Warning | tee "$OUT/hf.log" | tail -5
fi
exit $rc

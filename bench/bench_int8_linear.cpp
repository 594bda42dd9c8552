// The full LLM.int8() linear on the CPU backend (quantize X with outlier detection, int8 GEMM,
// dequantization, outlier product; fp32 in and out) against OpenBLAS fp32 cblas_sgemm on the
// same shapes and thread count.
//
// Shapes: M in {1, 8, 128, 1024} tokens x (K, N) in {(4096,4096), (4096,14336), (14336,4096)}
// (Llama/Mistral-7B attention and MLP projections). X holds ~0.1% outlier columns (|x| >= 6).
// Each int8 benchmark reports `x_fp32` = (sgemm time) / (int8 time) for its shape, against the
// fastest repetition of the sgemm benchmark of the same shape, which runs just before it. With oneDNN available (libdnnl),
// the bare int8 GEMM is also compared with oneDNN's s8 matmul (`x_ours`).
//
// Threads: LLMINT8_BENCH_THREADS (default: all OpenMP threads) for both libraries.
// Run e.g.: bench_int8_linear --benchmark_min_time=0.3
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "llmint8/backend.h"

#ifdef LLMINT8_HAVE_DNNL
#include <dnnl.hpp>
#endif

using namespace llmint8;

namespace {

int bench_threads() {
  if (const char* s = std::getenv("LLMINT8_BENCH_THREADS")) return std::max(1, std::atoi(s));
  return omp_get_max_threads();
}

// Cheap deterministic pseudo-normal numbers (sum of 4 uniforms): generating hundreds of MB must
// not dominate the benchmark's run time.
struct Rng {
  uint64_t s;
  float uniform() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return float(uint32_t(s >> 40)) * (1.0f / 16777216.0f);
  }
  float normal() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f; }
};

struct Problem {
  int64_t M, K, N;
  std::vector<float> X, W, Y;
  std::vector<int8_t> CB;
  std::vector<float> SCB;
};

// One problem at a time, reused by the sgemm and int8 benchmarks of that shape.
Problem& problem(int64_t M, int64_t K, int64_t N) {
  static std::unique_ptr<Problem> p;
  if (p && p->M == M && p->K == K && p->N == N) return *p;
  p.reset();
  p = std::make_unique<Problem>();
  p->M = M; p->K = K; p->N = N;
  Rng rng{uint64_t(M * 1315423911 + K * 2654435761 + N)};
  p->X.resize(size_t(M * K));
  for (auto& v : p->X) v = rng.normal();  // |x| < 6 always (sum of 4 uniforms)
  // ~0.1% outlier columns, each with a few large values.
  const int64_t n_out = std::max<int64_t>(1, K / 1000);
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t col = (i * 7919 + 13) % K;
    for (int64_t m = 0; m < M; m += 3) p->X[size_t(m * K + col)] = (m & 1 ? -1.f : 1.f) * (8.f + float(i));
  }
  p->W.resize(size_t(N * K));
  for (auto& v : p->W) v = 0.02f * rng.normal();
  p->CB.resize(p->W.size());
  p->SCB.resize(size_t(N));
  auto be = make_cpu_backend(bench_threads());
  be->quantize_rowwise(DType::F32, p->W.data(), N, K, 0.f, p->CB.data(), p->SCB.data(), nullptr);
  p->Y.resize(size_t(M * N));
  return *p;
}

// Fastest seconds per iteration seen for each shape (over repetitions): the baseline side of the
// ratios is its best run, which keeps the ratios conservative on a noisy shared machine.
using ShapeTimes = std::map<std::tuple<int64_t, int64_t, int64_t>, double>;
ShapeTimes g_sgemm_seconds;
void keep_min(ShapeTimes& t, std::tuple<int64_t, int64_t, int64_t> k, double s) {
  auto [it, fresh] = t.emplace(k, s);
  if (!fresh && s < it->second) it->second = s;
}

void BM_Sgemm(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Problem& p = problem(M, K, N);
  openblas_set_num_threads(bench_threads());
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, p.X.data(),
                int(K), p.W.data(), int(K), 0.0f, p.Y.data(), int(N));
    benchmark::DoNotOptimize(p.Y.data());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                   double(st.iterations());
  keep_min(g_sgemm_seconds, {M, K, N}, s);
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()),
                                             benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

ShapeTimes g_gemm_seconds;

// The bare int8 GEMM (s8 x s8 -> s32) of the CPU backend, for the comparison with oneDNN.
void BM_GemmS8(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Problem& p = problem(M, K, N);
  auto be = make_cpu_backend(bench_threads());
  std::vector<int8_t> A(size_t(M * K));
  for (size_t i = 0; i < A.size(); ++i) A[i] = int8_t(int(p.X[i] * 20.f));
  std::vector<int32_t> C(size_t(M * N));
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    be->gemm_s8s8s32(M, N, K, A.data(), p.CB.data(), C.data());
    benchmark::DoNotOptimize(C.data());
  }
  keep_min(g_gemm_seconds, {M, K, N},
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(st.iterations()));
  st.counters["GOPS"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()),
                                           benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  st.SetLabel(be->name());
}

#ifdef LLMINT8_HAVE_DNNL
// oneDNN's int8 matmul on the same operands: src s8 [M,K], weights s8 [K,N] stored as our [N,K]
// ("ba"), dst s32. oneDNN 2.x has no per-row (per-token) output scale for matmul, so only the
// bare GEMM is comparable. Reports x_ours = (oneDNN time) / (gemm_s8s8s32 time).
void BM_OnednnS8(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Problem& p = problem(M, K, N);
  omp_set_num_threads(bench_threads());
  using namespace dnnl;
  using dt = memory::data_type;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::desc a_md({M, K}, dt::s8, memory::format_tag::ab);
  const memory::desc b_md({K, N}, dt::s8, memory::format_tag::ba);
  const memory::desc c_md({M, N}, dt::s32, memory::format_tag::ab);
  const matmul prim(matmul::primitive_desc(matmul::desc(a_md, b_md, c_md), eng));
  std::vector<int8_t> A(size_t(M * K));
  for (size_t i = 0; i < A.size(); ++i) A[i] = int8_t(int(p.X[i] * 20.f));
  std::vector<int32_t> C(size_t(M * N));
  memory a(a_md, eng, A.data()), b(b_md, eng, p.CB.data()), c(c_md, eng, C.data());
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    prim.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    strm.wait();
    benchmark::DoNotOptimize(C.data());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                   double(st.iterations());
  st.counters["GOPS"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()),
                                           benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  const auto it = g_gemm_seconds.find({M, K, N});
  if (it != g_gemm_seconds.end()) st.counters["x_ours"] = s / it->second;
  const dnnl_version_t* v = version();
  st.SetLabel("oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
              std::to_string(v->patch));
}
#endif

void BM_Int8Linear(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Problem& p = problem(M, K, N);
  auto be = make_cpu_backend(bench_threads());
  const Int8Weight W{N, K, p.CB.data(), p.SCB.data()};
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    be->int8_linear(W, DType::F32, p.X.data(), M, 6.0f, nullptr, p.Y.data());
    benchmark::DoNotOptimize(p.Y.data());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                   double(st.iterations());
  st.counters["GOPS"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()),
                                           benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  const auto it = g_sgemm_seconds.find({M, K, N});
  if (it != g_sgemm_seconds.end()) st.counters["x_fp32"] = it->second / s;
  st.SetLabel(be->name());
}


// Pairs: sgemm then int8 for each shape, so the int8 run can report the ratio.
void register_all() {
  std::vector<std::vector<int64_t>> all;
  for (int64_t M : {1, 8, 128, 1024})
    for (auto [K, N] : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 14336}, {14336, 4096}}) {
      benchmark::RegisterBenchmark("sgemm_fp32", BM_Sgemm)->Args({M, K, N})->ArgNames({"M", "K", "N"})
          ->UseRealTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("int8_linear", BM_Int8Linear)->Args({M, K, N})->ArgNames({"M", "K", "N"})
          ->UseRealTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("gemm_s8s8s32", BM_GemmS8)->Args({M, K, N})->ArgNames({"M", "K", "N"})
          ->UseRealTime()->Unit(benchmark::kMillisecond);
#ifdef LLMINT8_HAVE_DNNL
      benchmark::RegisterBenchmark("onednn_s8s8s32", BM_OnednnS8)->Args({M, K, N})->ArgNames({"M", "K", "N"})
          ->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
    }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("threads", std::to_string(bench_threads()));
  benchmark::AddCustomContext("blas", openblas_get_config());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

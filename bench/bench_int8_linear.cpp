// The full LLM.int8() linear on the CPU backend (quantize X with outlier detection, int8 GEMM,
// dequantization, outlier product; fp32 in and out) against OpenBLAS fp32 cblas_sgemm on the
// same shapes and thread count.
//
// Shapes: M in {1, 8, 128, 1024} tokens x (K, N) in {(4096,4096), (4096,14336), (14336,4096)}
// (Llama/Mistral-7B attention and MLP projections). X holds ~0.1% outlier columns (|x| >= 6).
// Each int8 benchmark reports `x_fp32` = (sgemm time) / (int8 time) for its shape, from the
// sgemm benchmark of the same shape that runs just before it.
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

std::map<std::tuple<int64_t, int64_t, int64_t>, double> g_sgemm_seconds;

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
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_sgemm_seconds[{M, K, N}] = s / double(st.iterations());
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()),
                                             benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

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

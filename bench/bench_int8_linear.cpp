// The full LLM.int8() linear on the CPU backend (quantize X with outlier detection, int8 GEMM,
// dequantization, outlier product; fp32 in and out) against OpenBLAS fp32 cblas_sgemm on the
// same shapes and thread count; and the bare int8 GEMM against oneDNN's s8 matmul when oneDNN is
// available (libdnnl).
//
// Shapes: M in {1, 8, 128, 1024} tokens x (K, N) in {(4096,4096), (4096,14336), (14336,4096)}
// (Llama/Mistral-7B attention and MLP projections). X holds ~0.1% outlier columns (|x| >= 6).
//
// Every iteration runs the candidate and its baseline back to back and times each: the reported
// time is the candidate's, and the counters are
//   int8_linear:  x_fp32   = sgemm time / int8_linear time (> 1: int8 faster), fp32_ms
//   gemm_s8s8s32: x_onednn = oneDNN time / our gemm time   (> 1: ours faster),  onednn_ms
// Interleaving makes the ratios robust to the load drifting on a shared machine.
//
// Threads: LLMINT8_BENCH_THREADS (default: all OpenMP threads) for all libraries.
// Run e.g.: bench_int8_linear --benchmark_min_time=0.2 --benchmark_repetitions=3
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
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

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
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
  std::vector<int8_t> CB, Xq;  // Xq: int8 activations for the bare GEMM comparison
  std::vector<float> SCB;
};

// One problem at a time, reused by all benchmarks of that shape.
Problem& problem(int64_t M, int64_t K, int64_t N) {
  static std::unique_ptr<Problem> p;
  if (p && p->M == M && p->K == K && p->N == N) return *p;
  p.reset();
  p = std::make_unique<Problem>();
  p->M = M; p->K = K; p->N = N;
  Rng rng{uint64_t(M * 1315423911 + K * 2654435761 + N)};
  p->X.resize(size_t(M * K));
  for (auto& v : p->X) v = rng.normal();  // |x| < 3.5 always (sum of 4 uniforms)
  // ~0.1% outlier columns, each with large values in every third row.
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
  p->Xq.resize(p->X.size());
  std::vector<float> ax(static_cast<size_t>(M));
  be->quantize_rowwise(DType::F32, p->X.data(), M, K, 0.f, p->Xq.data(), ax.data(), nullptr);
  p->Y.resize(size_t(M * N));
  return *p;
}

void BM_Int8Linear(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Problem& p = problem(M, K, N);
  auto be = make_cpu_backend(bench_threads());
  openblas_set_num_threads(bench_threads());
  const Int8Weight W{N, K, p.CB.data(), p.SCB.data()};
  double t_int8 = 0, t_fp32 = 0;
  for (auto _ : st) {
    const auto t0 = Clock::now();
    be->int8_linear(W, DType::F32, p.X.data(), M, 6.0f, nullptr, p.Y.data());
    benchmark::ClobberMemory();
    const auto t1 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, p.X.data(),
                int(K), p.W.data(), int(K), 0.0f, p.Y.data(), int(N));
    benchmark::ClobberMemory();
    const auto t2 = Clock::now();
    st.SetIterationTime(seconds(t0, t1));
    t_int8 += seconds(t0, t1);
    t_fp32 += seconds(t1, t2);
  }
  st.counters["x_fp32"] = t_fp32 / t_int8;
  st.counters["fp32_ms"] = 1e3 * t_fp32 / double(st.iterations());
  st.counters["GOPS"] = 2e-9 * double(M * N * K) * double(st.iterations()) / t_int8;
  st.SetLabel(be->name());
}

#ifdef LLMINT8_HAVE_DNNL
// Our gemm_s8s8s32 against oneDNN's int8 matmul on the same operands: src s8 [M,K], weights s8
// [K,N] stored as our [N,K] ("ba"), dst s32. (oneDNN 2.x matmul has no per-row output scale, so
// the vector-wise dequantization of LLM.int8() is not expressible there: only the GEMM compares.)
void BM_GemmS8(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  Problem& p = problem(M, K, N);
  auto be = make_cpu_backend(bench_threads());
  omp_set_num_threads(bench_threads());
  using namespace dnnl;
  using dt = memory::data_type;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::desc a_md({M, K}, dt::s8, memory::format_tag::ab);
  const memory::desc b_md({K, N}, dt::s8, memory::format_tag::ba);
  const memory::desc c_md({M, N}, dt::s32, memory::format_tag::ab);
  const matmul prim(matmul::primitive_desc(matmul::desc(a_md, b_md, c_md), eng));
  std::vector<int32_t> C(size_t(M * N)), Cd(size_t(M * N));
  memory a(a_md, eng, p.Xq.data()), b(b_md, eng, p.CB.data()), c(c_md, eng, Cd.data());
  double t_ours = 0, t_dnnl = 0;
  for (auto _ : st) {
    const auto t0 = Clock::now();
    be->gemm_s8s8s32(M, N, K, p.Xq.data(), p.CB.data(), C.data());
    benchmark::ClobberMemory();
    const auto t1 = Clock::now();
    prim.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    strm.wait();
    benchmark::ClobberMemory();
    const auto t2 = Clock::now();
    st.SetIterationTime(seconds(t0, t1));
    t_ours += seconds(t0, t1);
    t_dnnl += seconds(t1, t2);
  }
  if (C != Cd) st.SkipWithError("oneDNN and gemm_s8s8s32 disagree");
  st.counters["x_onednn"] = t_dnnl / t_ours;
  st.counters["onednn_ms"] = 1e3 * t_dnnl / double(st.iterations());
  st.counters["GOPS"] = 2e-9 * double(M * N * K) * double(st.iterations()) / t_ours;
  const dnnl_version_t* v = version();
  st.SetLabel(be->name() + " vs oneDNN " + std::to_string(v->major) + "." +
              std::to_string(v->minor) + "." + std::to_string(v->patch));
}
#endif

double stat_min(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double stat_max(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

void register_all() {
  for (int64_t M : {1, 8, 128, 1024})
    for (auto [K, N] : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 14336}, {14336, 4096}}) {
      benchmark::RegisterBenchmark("int8_linear", BM_Int8Linear)->Args({M, K, N})->ArgNames({"M", "K", "N"})
          ->UseManualTime()->Unit(benchmark::kMillisecond)
          ->ComputeStatistics("min", stat_min)->ComputeStatistics("max", stat_max);
#ifdef LLMINT8_HAVE_DNNL
      benchmark::RegisterBenchmark("gemm_s8s8s32", BM_GemmS8)->Args({M, K, N})->ArgNames({"M", "K", "N"})
          ->UseManualTime()->Unit(benchmark::kMillisecond)
          ->ComputeStatistics("min", stat_min)->ComputeStatistics("max", stat_max);
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

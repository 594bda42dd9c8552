// LLM.int8() linear on the GPU (quantize X + int8 GEMM + dequant + outliers in 0.1% of the
// columns, one int8_linear call of the CUDA backend) against a cuBLAS fp16 GEMM with fp32
// accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F), same process, same shapes.
//
// Timing: every variant is captured into a CUDA graph of G calls that rotate through enough
// weight/activation copies to exceed the L2 several times (so small shapes stream from HBM as
// they would in a model), replayed after warm-up; the figure is the median over trials of
// (graph time / G), measured with CUDA events. Also printed: the int8 GEMM alone (cuBLASLt int32
// out, or the GEMV kernel's path for M <= 16 is not separable and shows '-'), the bytes and
// operations floors, and the relative difference int8 vs fp16 output.
//
// Usage: bench_cuda_linear [--quick | --decode | --profile]
// (LLMINT8_CUDA_DECODE_SPLIT=S forces the decode kernel's K split and LLMINT8_CUDA_NO_PDL=1
// turns off its programmatic dependent launch, for tuning.)
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "llmint8/backend.h"

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void ckb(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cuBLAS status %d\n", what, int(s));
    std::exit(1);
  }
}

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
  return uint32_t(x);
}
// Uniform in [-scale, scale), roughly; deterministic per (seed, index).
__global__ void fill_uniform(__half* p, size_t n, float scale, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float u = float(hash32(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f);
    p[i] = __float2half_rn((2.f * u - 1.f) * scale);
  }
}
// Outlier columns: every `stride`-th column holds +-8 (>= threshold 6) in every 4th row.
__global__ void plant_outliers(__half* x, int64_t M, int64_t K, int64_t stride, int64_t first) {
  const int64_t ncol = (K - first + stride - 1) / stride;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < ncol * M; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i / M, m = i % M;
    if (m % 4 == 0) x[m * K + first + c * stride] = __float2half_rn((m & 4) ? 8.f : -8.f);
  }
}

struct Timer {
  cudaEvent_t a, b;
  Timer() { ck(cudaEventCreate(&a), "event"); ck(cudaEventCreate(&b), "event"); }
  ~Timer() { cudaEventDestroy(a); cudaEventDestroy(b); }
};

// Median per-call microseconds of a graph holding `calls` calls.
template <class F>
double time_graph(cudaStream_t s, int calls, int trials, F&& enqueue) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  ck(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  for (int i = 0; i < calls; ++i) enqueue(i);
  ck(cudaStreamEndCapture(s, &g), "end capture");
  ck(cudaGraphInstantiate(&ge, g, 0), "instantiate");
  Timer t;
  for (int w = 0; w < 2; ++w) ck(cudaGraphLaunch(ge, s), "launch");
  std::vector<double> v;
  for (int i = 0; i < trials; ++i) {
    ck(cudaEventRecord(t.a, s), "record");
    ck(cudaGraphLaunch(ge, s), "launch");
    ck(cudaEventRecord(t.b, s), "record");
    ck(cudaEventSynchronize(t.b), "sync");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, t.a, t.b), "elapsed");
    v.push_back(1000.0 * ms / calls);
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

float half_bits_to_float(uint16_t h) {
  __half x;
  std::memcpy(&x, &h, 2);
  return __half2float(x);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  // --profile: a few plain calls per shape (no graphs, no timing), for ncu's per-kernel times.
  const bool profile = argc > 1 && std::string(argv[1]) == "--profile";
  // --decode: only M = 1, 4, 8 and 16.
  const bool decode_only = argc > 1 && std::string(argv[1]) == "--decode";
  auto be = llmint8::make_cuda_backend(0);
  if (!be) {
    std::printf("bench_cuda_linear: no CUDA device, nothing to measure\n");
    return 0;
  }
  auto stream = static_cast<cudaStream_t>(llmint8::cuda::stream_of(*be));
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "props");
  cublasHandle_t cb;
  ckb(cublasCreate(&cb), "cublasCreate");
  ckb(cublasSetStream(cb, stream), "cublasSetStream");
  void* cublas_ws = nullptr;
  ck(cudaMalloc(&cublas_ws, 64 << 20), "malloc");
  ckb(cublasSetWorkspace(cb, cublas_ws, 64 << 20), "cublasSetWorkspace");

  // Copy bandwidth (bytes read + written) as the memory ceiling.
  double bw = 0;
  {
    const size_t n = size_t(1) << 30;
    void *a, *b;
    ck(cudaMalloc(&a, n), "malloc");
    ck(cudaMalloc(&b, n), "malloc");
    ck(cudaMemsetAsync(a, 1, n, stream), "memset");
    double us = time_graph(stream, 1, 7, [&](int) { ck(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream), "copy"); });
    bw = 2.0 * n / (us * 1e-6);
    cudaFree(a);
    cudaFree(b);
  }
  // Datasheet dense peaks of the H100/H200 SXM (leads, not measurements).
  const double peak_i8 = 1979e12, peak_f16 = 989e12;
  std::printf("GPU: %s, %d SMs, L2 %d MiB; measured copy bandwidth %.0f GB/s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, bw / 1e9);

  const std::vector<std::pair<int64_t, int64_t>> kn =
      profile ? std::vector<std::pair<int64_t, int64_t>>{{4096, 4096}, {14336, 4096}}
      : quick ? std::vector<std::pair<int64_t, int64_t>>{{4096, 4096}, {4096, 14336}}
            : std::vector<std::pair<int64_t, int64_t>>{{4096, 4096}, {4096, 14336}, {14336, 4096}, {8192, 28672}, {28672, 8192}};
  const std::vector<int64_t> Ms = profile ? std::vector<int64_t>{1, 16, 4096}
                                 : decode_only ? std::vector<int64_t>{1, 4, 8, 16}
                                           : std::vector<int64_t>{1, 16, 128, 1024, 4096};
  const size_t l2_defeat = profile ? 0 : size_t(3) * prop.l2CacheSize;

  struct Row { int64_t K, N, M; double f16, i8, gemm, quant, deq, floor_b, floor_o, rel; int sets; };
  std::vector<Row> rows;
  for (const auto& kn_pair : kn) {
    const int64_t K = kn_pair.first, N = kn_pair.second;
    const size_t wbytes = size_t(N) * K;
    const int sets = int(std::clamp<size_t>((l2_defeat + wbytes - 1) / wbytes, 1, 16));
    std::vector<__half*> w16(sets);
    std::vector<int8_t*> cb8(sets);
    std::vector<float*> scb(sets);
    for (int s = 0; s < sets; ++s) {
      ck(cudaMalloc(&w16[s], wbytes * 2), "malloc W16");
      ck(cudaMalloc(&cb8[s], wbytes), "malloc CB");
      ck(cudaMalloc(&scb[s], N * 4), "malloc SCB");
      fill_uniform<<<1024, 256, 0, stream>>>(w16[s], wbytes, 0.05f, 1000 + s);
      be->quantize_rowwise(llmint8::DType::F16, w16[s], N, K, 0.f, cb8[s], scb[s], nullptr);
    }
    for (int64_t M : Ms) {
      std::vector<__half*> x(sets);
      for (int s = 0; s < sets; ++s) {
        ck(cudaMalloc(&x[s], size_t(M) * K * 2), "malloc X");
        fill_uniform<<<1024, 256, 0, stream>>>(x[s], size_t(M) * K, 2.f, 77 + s);
        const int64_t stride = 1000;  // 0.1% of the columns are outlier columns
        plant_outliers<<<256, 256, 0, stream>>>(x[s], M, K, stride, 17 + s);
      }
      __half *y16, *y8;
      int32_t* c32;
      ck(cudaMalloc(&y16, size_t(M) * N * 2), "malloc Y");
      ck(cudaMalloc(&y8, size_t(M) * N * 2), "malloc Y");
      ck(cudaMalloc(&c32, size_t(M) * N * 4), "malloc C");
      int8_t* q8;
      float* ax;
      ck(cudaMalloc(&q8, size_t(M) * K), "malloc Q");
      ck(cudaMalloc(&ax, size_t(M) * 4), "malloc ax");
      const double flops = 2.0 * M * N * K;
      const int calls = std::max(sets, int(std::min<double>(64, std::ceil(2e12 / flops))));  // small shapes: more calls per graph
      const int trials = flops > 1e12 ? 7 : 21;
      auto lin = [&](int i) {
        const int s = i % sets;
        llmint8::Int8Weight w{N, K, cb8[s], scb[s]};
        be->int8_linear(w, llmint8::DType::F16, x[s], M, 6.f, nullptr, y8);
      };
      lin(0);  // warm-up: grows the backend's scratch, picks the cuBLASLt algorithm
      ck(cudaStreamSynchronize(stream), "sync");
      if (profile) {
        const float a1 = 1.f, b0 = 0.f;
        for (int r = 0; r < 2; ++r) lin(r);
        ckb(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &a1, w16[0], CUDA_R_16F,
                         int(K), x[0], CUDA_R_16F, int(K), &b0, y16, CUDA_R_16F, int(N),
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), "cublasGemmEx");
        ck(cudaStreamSynchronize(stream), "sync");
        std::printf("profiled K=%lld N=%lld M=%lld\n", (long long)K, (long long)N, (long long)M);
        for (int s = 0; s < sets; ++s) cudaFree(x[s]);
        cudaFree(y16); cudaFree(y8); cudaFree(c32); cudaFree(q8); cudaFree(ax);
        continue;
      }
      const double t8 = time_graph(stream, calls, trials, lin);
      const float alpha = 1.f, beta = 0.f;
      auto f16 = [&](int i) {
        const int s = i % sets;
        ckb(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, w16[s], CUDA_R_16F,
                         int(K), x[s], CUDA_R_16F, int(K), &beta, y16, CUDA_R_16F, int(N),
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), "cublasGemmEx");
      };
      f16(0);
      ck(cudaStreamSynchronize(stream), "sync");
      const double t16 = time_graph(stream, calls, trials, f16);
      double tg = -1, tq = -1, td = -1;
      if (M > 16) {  // the stages alone: quantize (+ zero outlier columns), int8 GEMM, dequant
        auto qz = [&](int i) { be->quantize_rowwise(llmint8::DType::F16, x[i % sets], M, K, 6.f, q8, ax, nullptr); };
        qz(0);
        ck(cudaStreamSynchronize(stream), "sync");
        tq = time_graph(stream, calls, trials, qz);
        auto gm = [&](int i) { be->gemm_s8s8s32(M, N, K, q8, cb8[i % sets], c32); };
        gm(0);
        ck(cudaStreamSynchronize(stream), "sync");
        tg = time_graph(stream, calls, trials, gm);
        auto dq = [&](int i) { be->dequantize(M, N, c32, ax, scb[i % sets], nullptr, llmint8::DType::F16, y8); };
        dq(0);
        ck(cudaStreamSynchronize(stream), "sync");
        td = time_graph(stream, calls, trials, dq);
      }
      // Accuracy of int8 vs fp16 on set 0 (a sample of the outputs).
      lin(0);
      f16(0);
      ck(cudaStreamSynchronize(stream), "sync");
      const size_t ns = std::min<size_t>(size_t(M) * N, size_t(1) << 22);
      std::vector<uint16_t> a(ns), b(ns);
      ck(cudaMemcpy(a.data(), y8, ns * 2, cudaMemcpyDeviceToHost), "copy");
      ck(cudaMemcpy(b.data(), y16, ns * 2, cudaMemcpyDeviceToHost), "copy");
      double num = 0, den = 0;
      for (size_t i = 0; i < ns; ++i) {
        const double p = half_bits_to_float(a[i]), q = half_bits_to_float(b[i]);
        num += (p - q) * (p - q);
        den += q * q;
      }
      const double bytes = double(N) * K + 4.0 * N + 2.0 * M * K + 2.0 * M * N;
      rows.push_back({K, N, M, t16, t8, tg, tq, td, 1e6 * bytes / bw, 1e6 * flops / peak_i8,
                      std::sqrt(num / std::max(den, 1e-30)), sets});
      const Row& r = rows.back();
      std::fprintf(stderr, "K=%lld N=%lld M=%lld: fp16 %.1f us, int8 %.1f us (%.2fx), gemm %.1f us\n",
                   (long long)K, (long long)N, (long long)M, r.f16, r.i8, r.f16 / r.i8, r.gemm);
      for (int s = 0; s < sets; ++s) cudaFree(x[s]);
      cudaFree(y16); cudaFree(y8); cudaFree(c32); cudaFree(q8); cudaFree(ax);
    }
    for (int s = 0; s < sets; ++s) { cudaFree(w16[s]); cudaFree(cb8[s]); cudaFree(scb[s]); }
  }
  (void)peak_f16;
  std::printf("\n| K | N | M | fp16 cuBLAS (us) | LLM.int8() (us) | speedup | quantize alone (us) | "
              "int8 GEMM alone (us) | dequant alone (us) | int8 GB/s | int8 TOPS | floor bytes (us) | "
              "floor ops (us) | rel. diff vs fp16 |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const double bytes = double(r.N) * r.K + 4.0 * r.N + 2.0 * r.M * r.K + 2.0 * r.M * r.N;
    auto fmt = [](double v) {
      char b[32];
      if (v < 0) std::snprintf(b, sizeof b, "-");
      else std::snprintf(b, sizeof b, "%.1f", v);
      return std::string(b);
    };
    std::printf("| %lld | %lld | %lld | %.1f | %.1f | %.2fx | %s | %s | %s | %.0f | %.0f | %.1f | %.1f | %.1e |\n",
                (long long)r.K, (long long)r.N, (long long)r.M, r.f16, r.i8, r.f16 / r.i8,
                fmt(r.quant).c_str(), fmt(r.gemm).c_str(), fmt(r.deq).c_str(),
                bytes / (r.i8 * 1e-6) / 1e9, 2.0 * r.M * r.N * r.K / (r.i8 * 1e-6) / 1e12,
                r.floor_b, r.floor_o, r.rel);
  }
  cublasDestroy(cb);
  cudaFree(cublas_ws);
  return 0;
}

// The CPU backend. Placeholder until the SIMD kernels land: OpenMP-parallel loops over the
// reference's per-row functions.
#include <omp.h>

#include "quant/host_backend.h"
#include "quant/reference.h"

namespace llmint8 {
namespace {

class CpuBackend final : public HostBackend {
 public:
  explicit CpuBackend(int threads) : threads_(threads > 0 ? threads : omp_get_max_threads()) {}
  std::string name() const override { return "cpu"; }
  void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                    int32_t* C) override {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m) {
        int32_t acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += int32_t(A[m * K + k]) * int32_t(B[n * K + k]);
        C[m * N + n] = acc;
      }
  }

 protected:
#define LLMINT8_CPU_HOOKS(T)                                                                      \
  void quantize_rowwise_t(const T* X, int64_t M, int64_t K, float th, int8_t* Q, float* amax,    \
                          uint8_t* oc) override {                                                 \
    ref::quantize_rowwise(X, M, K, th, Q, amax, oc);                                              \
  }                                                                                               \
  void dequantize_t(int64_t M, int64_t N, const int32_t* C, const float* ax, const float* aw,     \
                    const float* bias, T* Y) override {                                           \
    ref::dequantize(M, N, C, ax, aw, bias, Y);                                                    \
  }                                                                                               \
  void int8_linear_t(const Int8Weight& W, const T* X, int64_t M, float th, const float* bias,     \
                     T* Y) override {                                                             \
    ref::int8_linear(W, X, M, th, bias, Y);                                                       \
  }
  LLMINT8_CPU_HOOKS(float)
  LLMINT8_CPU_HOOKS(f16)
  LLMINT8_CPU_HOOKS(bf16)
#undef LLMINT8_CPU_HOOKS

 private:
  int threads_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace llmint8

// Shared plumbing for backends whose memory is host memory: allocation, copies, and the
// DType -> template dispatch. A concrete host backend implements the typed hooks.
#pragma once
#include <cstdlib>
#include <cstring>

#include "llmint8/backend.h"
#include "llmint8/error.h"

namespace llmint8 {

class HostBackend : public Backend {
 public:
  bool is_host() const override { return true; }
  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void release(void* p) override { std::free(p); }
  void to_device(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void to_host(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }

  void quantize_rowwise(DType t, const void* X, int64_t M, int64_t K, float threshold, int8_t* Q,
                        float* absmax, uint8_t* outlier_cols) override {
    switch (t) {
      case DType::F32: return quantize_rowwise_t(static_cast<const float*>(X), M, K, threshold, Q, absmax, outlier_cols);
      case DType::F16: return quantize_rowwise_t(static_cast<const f16*>(X), M, K, threshold, Q, absmax, outlier_cols);
      case DType::BF16: return quantize_rowwise_t(static_cast<const bf16*>(X), M, K, threshold, Q, absmax, outlier_cols);
      default: throw Error("quantize_rowwise: input must be F32, F16 or BF16");
    }
  }
  void dequantize(int64_t M, int64_t N, const int32_t* C, const float* ax, const float* aw,
                  const float* bias, DType t, void* Y) override {
    switch (t) {
      case DType::F32: return dequantize_t(M, N, C, ax, aw, bias, static_cast<float*>(Y));
      case DType::F16: return dequantize_t(M, N, C, ax, aw, bias, static_cast<f16*>(Y));
      case DType::BF16: return dequantize_t(M, N, C, ax, aw, bias, static_cast<bf16*>(Y));
      default: throw Error("dequantize: output must be F32, F16 or BF16");
    }
  }
  void int8_linear(const Int8Weight& W, DType t, const void* X, int64_t M, float threshold,
                   const float* bias, void* Y) override {
    switch (t) {
      case DType::F32: return int8_linear_t(W, static_cast<const float*>(X), M, threshold, bias, static_cast<float*>(Y));
      case DType::F16: return int8_linear_t(W, static_cast<const f16*>(X), M, threshold, bias, static_cast<f16*>(Y));
      case DType::BF16: return int8_linear_t(W, static_cast<const bf16*>(X), M, threshold, bias, static_cast<bf16*>(Y));
      default: throw Error("int8_linear: activations must be F32, F16 or BF16");
    }
  }

 protected:
#define LLMINT8_HOST_HOOKS(T)                                                                     \
  virtual void quantize_rowwise_t(const T* X, int64_t M, int64_t K, float threshold, int8_t* Q,   \
                                  float* absmax, uint8_t* outlier_cols) = 0;                      \
  virtual void dequantize_t(int64_t M, int64_t N, const int32_t* C, const float* ax,              \
                            const float* aw, const float* bias, T* Y) = 0;                        \
  virtual void int8_linear_t(const Int8Weight& W, const T* X, int64_t M, float threshold,         \
                             const float* bias, T* Y) = 0;
  LLMINT8_HOST_HOOKS(float)
  LLMINT8_HOST_HOOKS(f16)
  LLMINT8_HOST_HOOKS(bf16)
#undef LLMINT8_HOST_HOOKS
};

}  // namespace llmint8

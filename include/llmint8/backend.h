// The LLM.int8() primitives, behind one narrow interface that every backend implements
// (the scalar reference, the SIMD CPU path, CUDA). All pointers live in the backend's memory
// (host memory for CPU backends); alloc/to_device/to_host move data in and out.
//
// Shapes: X is [M,K] row-major (M tokens, K input features); W is [N,K] row-major
// (N output features) -- the "TN" layout of Y = X * W^T.
//
// Numerics (bitsandbytes' LLM.int8(), for every input dtype):
//  * quantize_rowwise: per row m, absmax[m] = max |x| over the values with NOT(|x| >= threshold)
//    (threshold <= 0: over all values), computed in float on the exact input values;
//    q = round_half_even(x * inv) with inv = 127.0f * (1.0f / absmax[m]), each step an IEEE float
//    operation, clamped to [-127, 127]. This is bitsandbytes' PyTorch ("default") backend exactly:
//    torch evaluates 127.0 / t as t.reciprocal() * 127, which differs from a correctly rounded
//    127/absmax at rare exact .5 ties (bitsandbytes' CUDA kernel, with its approximate
//    __fdividef, can differ there too); we pick the form that is reproducible on every backend;
//    a row with absmax 0 gets scale 0 and all-zero q. With threshold > 0, every column holding any
//    |x| >= threshold is an outlier column: outlier_cols[k] = 1 and q[:,k] = 0 in every row.
//    NaN never counts as an outlier; a row holding NaN gets absmax NaN and q = 0, so its outputs
//    are NaN. +-Inf with threshold > 0 is an outlier (carried by the 16-bit part); with threshold 0
//    it makes absmax Inf, q = 0 and the row's outputs non-finite. Nothing is undefined behaviour.
//    Weights use the same function with threshold 0: CB = q, SCB = absmax (for fp16 weights that
//    is exactly bitsandbytes' SCB, the fp16 max |w| widened to float).
//  * gemm_s8s8s32: C[m,n] = sum_k A[m,k] * B[n,k], exact int32 (|C| <= K*127*127, so exact for
//    K < 133,000).
//  * dequantize: Y[m,n] = float(C) * (absmax_x[m] * absmax_w[n]) * (1/16129) + bias[n], rounded
//    once to Y's dtype.
//  * int8_linear: dequantize(gemm(quantize(X), CB)) plus the outlier columns' product in 16-bit:
//    sum over outlier k of x[m,k] * Wdq[n,k], Wdq = io_dtype(float(CB[n,k]) * SCB[n] * (1/127)) --
//    the dequantized int8 weight, as bitsandbytes does (it keeps no 16-bit copy). Products are
//    accumulated in float and the sum is rounded once to the io dtype. threshold 0 = no decomposition.
//  * kept columns (going beyond bitsandbytes, `--keep-outlier-columns`): an Int8Weight may carry
//    the 16-bit weight columns of a few input columns (W.kept_cols, W.kept_w). Which columns are
//    outliers is still decided from X at run time by the threshold, exactly as above; for an
//    outlier column k that is also kept (k = kept_cols[j]), the 16-bit product uses
//    Wdq[n,k] = io_dtype(float(kept_w[n,j])) -- the fp16 weight itself -- instead of the
//    dequantized int8 column. Outlier columns that are not kept use the dequantized int8 column;
//    kept columns that are not outliers in this call change nothing (their int8 weights stay in
//    the int8 product). Same accumulation order, so every backend stays bit-identical.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "llmint8/dtype.h"

namespace llmint8 {

// 1 / (127 * 127): the dequantization constant.
inline constexpr float kDequantScale = 1.0f / 16129.0f;
// 1 / 127: dequantizes one int8 value against its absmax.
inline constexpr float kInvInt8Max = 1.0f / 127.0f;

// An LLM.int8() weight in backend memory: CB [out, in] int8, SCB [out] float32.
// Optionally with kept columns: n_kept input-column indices, strictly ascending and
// < in_features (kept_cols, int32), and their weights kept_w [out, n_kept] row-major as fp16 bits
// -- the same fp16-cast weight that CB/SCB were quantized from (bitsandbytes casts every weight to
// fp16 first), so a kept column holds exactly the value its int8 column approximates.
struct Int8Weight {
  int64_t out_features = 0;
  int64_t in_features = 0;
  const int8_t* CB = nullptr;
  const float* SCB = nullptr;
  int64_t n_kept = 0;
  const int32_t* kept_cols = nullptr;
  const uint16_t* kept_w = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool is_host() const = 0;  // true when pointers are plain host memory

  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() {}

  // x_type: F32, F16 or BF16. outlier_cols [K] may be null when threshold <= 0.
  virtual void quantize_rowwise(DType x_type, const void* X, int64_t M, int64_t K, float threshold,
                                int8_t* Q, float* absmax, uint8_t* outlier_cols) = 0;
  virtual void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                            int32_t* C) = 0;
  // bias [N] float32 or null; y_type F32, F16 or BF16.
  virtual void dequantize(int64_t M, int64_t N, const int32_t* C, const float* absmax_x,
                          const float* absmax_w, const float* bias, DType y_type, void* Y) = 0;
  // Y [M, W.out_features] = LLM.int8()(X [M, W.in_features]) with X and Y both of io_type.
  virtual void int8_linear(const Int8Weight& W, DType io_type, const void* X, int64_t M,
                           float threshold, const float* bias, void* Y) = 0;
};

// The plain scalar reference: one thread, no SIMD; the numerics' source of truth.
std::unique_ptr<Backend> make_reference_backend();
// The optimised CPU backend: AVX-512 VNNI / AVX2 chosen at run time, `threads` threads (0 = all).
std::unique_ptr<Backend> make_cpu_backend(int threads = 0);
// The CUDA backend on `device`; null when built without CUDA or when no GPU is present.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace llmint8

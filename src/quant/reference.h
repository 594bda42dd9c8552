// Scalar reference implementations of the LLM.int8() primitives, on host memory.
// The numerics are documented in include/llmint8/backend.h; every other backend must agree with
// these (bit for bit on int8/int32 results).
#pragma once
#include <cstdint>
#include <vector>

#include "llmint8/backend.h"

namespace llmint8::ref {

// Per-row quantization of one row of K values; returns the row's absmax (NaN if the row holds NaN).
// Marks outlier columns in `outlier_cols` (when non-null and threshold > 0) but does not zero
// other rows' values in those columns: quantize_rowwise does that after all rows are seen.
template <class T>
float quantize_row(const T* x, int64_t K, float threshold, int8_t* q, uint8_t* outlier_cols);

// The factor that maps a row onto [-127, 127]: (1/absmax)*127 in two float roundings, as
// bitsandbytes' PyTorch backend evaluates 127/absmax (see include/llmint8/backend.h). Every host
// kernel takes it from here.
inline float int8_scale_of(float absmax) {
  const float r = 1.0f / absmax;
  return 127.0f * r;
}

// One int8 value: round_half_even(v * inv_scale) clamped to [-127,127]; NaN -> 0.
inline int8_t quantize_value(float v, float inv_scale) {
  float r = __builtin_nearbyintf(v * inv_scale);
  if (!(r == r)) return 0;
  r = r > 127.f ? 127.f : (r < -127.f ? -127.f : r);
  return int8_t(r);
}

template <class T>
void quantize_rowwise(const T* X, int64_t M, int64_t K, float threshold, int8_t* Q, float* absmax,
                      uint8_t* outlier_cols);

// Sets Q[:, k] = 0 for every k with outlier_cols[k] != 0.
void zero_outlier_columns(int8_t* Q, int64_t M, int64_t K, const uint8_t* outlier_cols);

void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C);

template <class T>
void dequantize(int64_t M, int64_t N, const int32_t* C, const float* absmax_x,
                const float* absmax_w, const float* bias, T* Y);

// For each outlier column cols[t], its slot j in W's kept columns (W.kept_cols[j] == cols[t]),
// or -1 when it is not kept.
std::vector<int64_t> kept_slots(const Int8Weight& W, const std::vector<int64_t>& cols);

// The weight the 16-bit outlier product multiplies x[m,k] with, for row n and outlier column k
// of kept slot `slot` (-1: not kept), rounded to T: the kept fp16 weight, else the dequantized
// int8 weight CB[n,k] * SCB[n] / 127. Every host backend takes it from here.
template <class T>
inline float outlier_weight(const Int8Weight& W, int64_t n, int64_t k, int64_t slot) {
  const float w = slot >= 0 ? to_float(f16{W.kept_w[n * W.n_kept + slot]})
                            : float(W.CB[n * W.in_features + k]) * W.SCB[n] * kInvInt8Max;
  return to_float(from_float<T>(w));
}

// Adds the outlier columns' 16-bit product into Yf [M,N] (float):
// Yf[m,n] += sum_{k in cols} float(x[m,k]) * outlier_weight<T>(W, n, k, slot of k).
template <class T>
void add_outlier_product(const T* X, int64_t M, int64_t K, const Int8Weight& W,
                         const std::vector<int64_t>& cols, float* Yf);

template <class T>
void int8_linear(const Int8Weight& W, const T* X, int64_t M, float threshold, const float* bias,
                 T* Y);

// Indices of the columns flagged in a [K] mask.
std::vector<int64_t> outlier_indices(const uint8_t* outlier_cols, int64_t K);

}  // namespace llmint8::ref

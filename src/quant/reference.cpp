#include "quant/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "llmint8/error.h"

namespace llmint8::ref {

template <class T>
float quantize_row(const T* x, int64_t K, float threshold, int8_t* q, uint8_t* outlier_cols) {
  const bool decompose = threshold > 0.f;
  float amax = 0.f;
  bool has_nan = false;
  for (int64_t k = 0; k < K; ++k) {
    const float v = to_float(x[k]);
    const float a = std::fabs(v);
    if (std::isnan(v)) {
      has_nan = true;
    } else if (decompose && a >= threshold) {
      if (outlier_cols) outlier_cols[k] = 1;
    } else if (a > amax) {
      amax = a;
    }
  }
  if (has_nan || amax == 0.f) {
    for (int64_t k = 0; k < K; ++k) q[k] = 0;
    return has_nan ? std::numeric_limits<float>::quiet_NaN() : 0.f;
  }
  const float inv = int8_scale_of(amax);
  for (int64_t k = 0; k < K; ++k) {
    const float v = to_float(x[k]);
    q[k] = (decompose && std::fabs(v) >= threshold) ? int8_t(0) : quantize_value(v, inv);
  }
  return amax;
}

void zero_outlier_columns(int8_t* Q, int64_t M, int64_t K, const uint8_t* outlier_cols) {
  if (!outlier_cols) return;
  for (int64_t k = 0; k < K; ++k)
    if (outlier_cols[k])
      for (int64_t m = 0; m < M; ++m) Q[m * K + k] = 0;
}

template <class T>
void quantize_rowwise(const T* X, int64_t M, int64_t K, float threshold, int8_t* Q, float* absmax,
                      uint8_t* outlier_cols) {
  if (outlier_cols)
    for (int64_t k = 0; k < K; ++k) outlier_cols[k] = 0;
  for (int64_t m = 0; m < M; ++m)
    absmax[m] = quantize_row(X + m * K, K, threshold, Q + m * K, outlier_cols);
  if (threshold > 0.f) zero_outlier_columns(Q, M, K, outlier_cols);
}

void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += int32_t(A[m * K + k]) * int32_t(B[n * K + k]);
      C[m * N + n] = acc;
    }
}

template <class T>
void dequantize(int64_t M, int64_t N, const int32_t* C, const float* absmax_x,
                const float* absmax_w, const float* bias, T* Y) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float y = float(C[m * N + n]) * (absmax_x[m] * absmax_w[n]) * kDequantScale;
      if (bias) y += bias[n];
      Y[m * N + n] = from_float<T>(y);
    }
}

std::vector<int64_t> outlier_indices(const uint8_t* outlier_cols, int64_t K) {
  std::vector<int64_t> cols;
  if (outlier_cols)
    for (int64_t k = 0; k < K; ++k)
      if (outlier_cols[k]) cols.push_back(k);
  return cols;
}

std::vector<int64_t> kept_slots(const Int8Weight& W, const std::vector<int64_t>& cols) {
  std::vector<int64_t> slots(cols.size(), -1);
  const int32_t* b = W.kept_cols;
  const int32_t* e = W.kept_cols ? W.kept_cols + W.n_kept : nullptr;
  for (size_t t = 0; t < cols.size() && W.n_kept > 0; ++t) {
    const int32_t* p = std::lower_bound(b, e, cols[t]);
    if (p != e && *p == cols[t]) slots[t] = p - b;
  }
  return slots;
}

template <class T>
void add_outlier_product(const T* X, int64_t M, int64_t K, const Int8Weight& W,
                         const std::vector<int64_t>& cols, float* Yf) {
  if (cols.empty()) return;
  const int64_t N = W.out_features;
  const std::vector<int64_t> slots = kept_slots(W, cols);
  for (int64_t n = 0; n < N; ++n) {
    // The weight columns: kept fp16 ones, else dequantized from int8; rounded to the activation dtype.
    std::vector<float> wdq(cols.size());
    for (size_t j = 0; j < cols.size(); ++j) wdq[j] = outlier_weight<T>(W, n, cols[j], slots[j]);
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.f;
      for (size_t j = 0; j < cols.size(); ++j) acc += to_float(X[m * K + cols[j]]) * wdq[j];
      Yf[m * N + n] += acc;
    }
  }
}

template <class T>
void int8_linear(const Int8Weight& W, const T* X, int64_t M, float threshold, const float* bias,
                 T* Y) {
  const int64_t K = W.in_features, N = W.out_features;
  std::vector<int8_t> q(size_t(M * K));
  std::vector<float> amax(static_cast<size_t>(M));
  std::vector<uint8_t> mask(static_cast<size_t>(K));
  quantize_rowwise(X, M, K, threshold, q.data(), amax.data(), mask.data());
  std::vector<int32_t> acc(size_t(M * N));
  gemm_s8s8s32(M, N, K, q.data(), W.CB, acc.data());
  std::vector<float> yf(size_t(M * N));
  dequantize(M, N, acc.data(), amax.data(), W.SCB, bias, yf.data());
  add_outlier_product(X, M, K, W, outlier_indices(mask.data(), K), yf.data());
  for (int64_t i = 0; i < M * N; ++i) Y[i] = from_float<T>(yf[i]);
}

#define LLMINT8_INSTANTIATE(T)                                                                    \
  template float quantize_row<T>(const T*, int64_t, float, int8_t*, uint8_t*);                    \
  template void quantize_rowwise<T>(const T*, int64_t, int64_t, float, int8_t*, float*, uint8_t*); \
  template void dequantize<T>(int64_t, int64_t, const int32_t*, const float*, const float*,       \
                              const float*, T*);                                                  \
  template void add_outlier_product<T>(const T*, int64_t, int64_t, const Int8Weight&,             \
                                       const std::vector<int64_t>&, float*);                      \
  template void int8_linear<T>(const Int8Weight&, const T*, int64_t, float, const float*, T*);
LLMINT8_INSTANTIATE(float)
LLMINT8_INSTANTIATE(f16)
LLMINT8_INSTANTIATE(bf16)
#undef LLMINT8_INSTANTIATE

}  // namespace llmint8::ref

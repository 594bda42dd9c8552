#include "quant/baselines.h"

#include <algorithm>
#include <cmath>

#include "quant/reference.h"

namespace llmint8::baseline {

AbsmaxTensor quantize_absmax_tensor(const float* x, int64_t n) {
  AbsmaxTensor r;
  for (int64_t i = 0; i < n; ++i) r.absmax = std::max(r.absmax, std::fabs(x[i]));
  r.q.resize(size_t(n));
  const float inv = r.absmax > 0.f ? 127.0f / r.absmax : 0.f;
  for (int64_t i = 0; i < n; ++i) r.q[i] = ref::quantize_value(x[i], inv);
  return r;
}

ZeroPointTensor quantize_zeropoint_tensor(const float* x, int64_t n) {
  ZeroPointTensor r;
  float lo = 0.f, hi = 0.f;  // the range always holds 0 so that 0 is exact
  for (int64_t i = 0; i < n; ++i) { lo = std::min(lo, x[i]); hi = std::max(hi, x[i]); }
  r.scale = hi > lo ? 255.0f / (hi - lo) : 1.f;
  r.zero_point = int32_t(std::nearbyint(-lo * r.scale)) - 128;
  r.q.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] * r.scale) + float(r.zero_point);
    r.q[i] = int8_t(std::clamp(v, -128.f, 127.f));
  }
  return r;
}

std::vector<float> matmul_absmax_tensor(const float* X, const float* W, int64_t M, int64_t N,
                                        int64_t K) {
  const AbsmaxTensor qx = quantize_absmax_tensor(X, M * K), qw = quantize_absmax_tensor(W, N * K);
  std::vector<int32_t> acc(size_t(M * N));
  ref::gemm_s8s8s32(M, N, K, qx.q.data(), qw.q.data(), acc.data());
  std::vector<float> y(size_t(M * N));
  const float s = qx.absmax * qw.absmax / 16129.0f;
  for (size_t i = 0; i < y.size(); ++i) y[i] = float(acc[i]) * s;
  return y;
}

std::vector<float> matmul_zeropoint_tensor(const float* X, const float* W, int64_t M, int64_t N,
                                           int64_t K) {
  const ZeroPointTensor qx = quantize_zeropoint_tensor(X, M * K);
  const ZeroPointTensor qw = quantize_zeropoint_tensor(W, N * K);
  // (qx - zx)(qw - zw) expanded so the integer product stays exact in int64.
  std::vector<float> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += int64_t(int32_t(qx.q[m * K + k]) - qx.zero_point) *
               int64_t(int32_t(qw.q[n * K + k]) - qw.zero_point);
      y[m * N + n] = float(double(acc) / (double(qx.scale) * double(qw.scale)));
    }
  return y;
}

}  // namespace llmint8::baseline

// Scalar kernels: the fallback tier for CPUs without AVX2, and the parts of the AVX2 tier that
// have no AVX2 specialisation (quantization, epilogue). Numerics as in kernels.h.
#include <cmath>
#include <limits>

// Keep the reference's separately rounded multiplies and adds even when built with FMA enabled.
#pragma GCC optimize("fp-contract=off")

#include "cpu/kernels.h"
#include "llmint8/backend.h"

namespace llmint8::cpu {
namespace {

template <class T>
float quant_row(const void* xv, int64_t K, float threshold, uint8_t* q, uint8_t qxor,
                uint8_t* mask) {
  const T* x = static_cast<const T*>(xv);
  const bool decompose = threshold > 0.f;
  float amax = 0.f;
  bool has_nan = false;
  for (int64_t k = 0; k < K; ++k) {
    const float v = to_float(x[k]);
    const float a = std::fabs(v);
    if (std::isnan(v)) has_nan = true;
    else if (decompose && a >= threshold) { if (mask) mask[k] = 1; }
    else if (a > amax) amax = a;
  }
  if (has_nan || amax == 0.f) {
    for (int64_t k = 0; k < K; ++k) q[k] = qxor;
    return has_nan ? std::numeric_limits<float>::quiet_NaN() : 0.f;
  }
  const float inv = 127.0f / amax;
  for (int64_t k = 0; k < K; ++k) {
    const float v = to_float(x[k]);
    int8_t r = 0;
    if (!(decompose && std::fabs(v) >= threshold)) {
      float f = __builtin_nearbyintf(v * inv);
      if (f == f) r = int8_t(f > 127.f ? 127.f : (f < -127.f ? -127.f : f));
    }
    q[k] = uint8_t(r) ^ qxor;
  }
  return amax;
}

template <class T>
void epilogue(const EpiArgs& e, int64_t m0, int64_t mc, int64_t n0, int64_t nw, const int32_t* c,
              int64_t ldc, const float* wdq) {
  T* Y = static_cast<T*>(e.Y);
  for (int64_t i = 0; i < mc; ++i) {
    const int64_t m = m0 + i;
    for (int64_t j = 0; j < nw; ++j) {
      const int64_t n = n0 + j;
      float y = float(c[i * ldc + j]) * (e.ax[m] * e.aw[n]) * kDequantScale;
      if (e.bias) y += e.bias[n];
      if (e.nc) {
        float o = 0.f;
        for (int64_t t = 0; t < e.nc; ++t) o += e.xo[m * e.nc + t] * wdq[t * nw + j];
        y += o;
      }
      Y[m * e.ldy + n] = from_float<T>(y);
    }
  }
}

void dot_tile(const uint8_t* A, int64_t lda, int mt, const int8_t* const* B, int nt, int64_t K,
              int32_t* c, int64_t ldc) {
  for (int i = 0; i < mt; ++i)
    for (int j = 0; j < nt; ++j) {
      const uint8_t* a = A + i * lda;
      const int8_t* b = B[j];
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (int32_t(a[k]) - 128) * int32_t(b[k]);
      c[i * ldc + j] = acc;
    }
}

}  // namespace

Kernels scalar_kernels() {
  Kernels k;
  k.isa = Isa::Scalar;
  k.quant_row[0] = quant_row<float>;
  k.quant_row[1] = quant_row<f16>;
  k.quant_row[2] = quant_row<bf16>;
  k.epilogue[0] = epilogue<float>;
  k.epilogue[1] = epilogue<f16>;
  k.epilogue[2] = epilogue<bf16>;
  k.dot_tile = dot_tile;
  k.dot_mt = 4;
  k.dot_nt = 4;
  return k;
}

}  // namespace llmint8::cpu

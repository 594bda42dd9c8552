// AVX2 tier: the int8 GEMM tile widens both operands to int16 and uses vpmaddwd (int16 x int16
// pairs summed into int32) -- exact for every int8 input. (vpmaddubsw would be twice as fast but
// saturates its int16 pair sums, so it is not exact.) Quantization and the dequantization
// epilogue process 8 values at a time (F16C for fp16), row tails with scalar code of identical
// numerics; float math keeps the reference's operation order (no FMA), so results are
// bit-identical to it. See kernels_avx512.cpp for why functions carry target attributes.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/kernels.h"
#include "llmint8/backend.h"

#pragma GCC optimize("fp-contract=off")
#define LLMINT8_AVX2 __attribute__((target("avx2,f16c")))

namespace llmint8::cpu {
namespace {

LLMINT8_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
LLMINT8_AVX2 inline __m256 load8(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LLMINT8_AVX2 inline __m256 load8(const bf16* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

LLMINT8_AVX2 inline void store8(float* p, __m256 y) { _mm256_storeu_ps(p, y); }
LLMINT8_AVX2 inline void store8(f16* p, __m256 y) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (_mm256_movemask_ps(_mm256_cmp_ps(y, y, _CMP_UNORD_Q))) {  // NaN bits exactly as to_f16()
    alignas(32) float v[8];
    _mm256_store_ps(v, y);
    for (int i = 0; i < 8; ++i)
      if (std::isnan(v[i])) p[i] = to_f16(v[i]);
  }
}
LLMINT8_AVX2 inline void store8(bf16* p, __m256 y) {
  const __m256i u = _mm256_castps_si256(y);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i nanr = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, nanr, _mm256_castps_si256(_mm256_cmp_ps(y, y, _CMP_UNORD_Q)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}

template <class T>
LLMINT8_AVX2 float quant_row(const void* xv, int64_t K, float threshold, uint8_t* q, uint8_t qxor,
                             uint8_t* mask) {
  const T* x = static_cast<const T*>(xv);
  const bool decompose = threshold > 0.f;
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 thr = _mm256_set1_ps(threshold);
  __m256 vmax = _mm256_setzero_ps();
  int nan_any = 0;
  float amax = 0.f;
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = load8(x + k);
    const __m256 a = _mm256_and_ps(v, absm);
    nan_any |= _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m256 valid;
    if (decompose) {
      if (int om = _mm256_movemask_ps(_mm256_cmp_ps(a, thr, _CMP_GE_OQ)); om && mask)
        for (int i = 0; i < 8; ++i)
          if (om >> i & 1) mask[k + i] = 1;
      valid = _mm256_cmp_ps(a, thr, _CMP_LT_OQ);
    } else {
      valid = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
    }
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(a, valid));
  }
  for (; k < K; ++k) {  // tail: the reference's scalar logic
    const float v = to_float(x[k]), a = std::fabs(v);
    if (std::isnan(v)) nan_any = 1;
    else if (decompose && a >= threshold) { if (mask) mask[k] = 1; }
    else if (a > amax) amax = a;
  }
  alignas(32) float mx[8];
  _mm256_store_ps(mx, vmax);
  for (float m : mx) amax = m > amax ? m : amax;
  if (nan_any || amax == 0.f) {
    std::memset(q, qxor, size_t(K));
    return nan_any ? std::numeric_limits<float>::quiet_NaN() : 0.f;
  }
  const float inv_s = 127.0f / amax;
  const __m256 inv = _mm256_set1_ps(inv_s);
  const __m256 hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
  const __m128i vx = _mm_set1_epi8(char(qxor));
  for (k = 0; k + 8 <= K; k += 8) {
    const __m256 v = load8(x + k);
    __m256 r = _mm256_round_ps(_mm256_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 keep = _mm256_cmp_ps(r, r, _CMP_ORD_Q);
    if (decompose) keep = _mm256_and_ps(keep, _mm256_cmp_ps(_mm256_and_ps(v, absm), thr, _CMP_LT_OQ));
    r = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(r, lo), hi), keep);  // dropped lanes -> +0
    const __m256i i32 = _mm256_cvtps_epi32(r);
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_xor_si128(_mm_packs_epi16(i16, i16), vx));
  }
  for (; k < K; ++k) {
    const float v = to_float(x[k]);
    int8_t r8 = 0;
    if (!(decompose && std::fabs(v) >= threshold)) {
      const float f = __builtin_nearbyintf(v * inv_s);
      if (f == f) r8 = int8_t(f > 127.f ? 127.f : (f < -127.f ? -127.f : f));
    }
    q[k] = uint8_t(r8) ^ qxor;
  }
  return amax;
}

template <class T>
LLMINT8_AVX2 void epilogue(const EpiArgs& e, int64_t m0, int64_t mc, int64_t n0, int64_t nw,
                           const int32_t* c, int64_t ldc, const float* wdq) {
  T* Y = static_cast<T*>(e.Y);
  const __m256 ds = _mm256_set1_ps(kDequantScale);
  for (int64_t i = 0; i < mc; ++i) {
    const int64_t m = m0 + i;
    const __m256 axm = _mm256_set1_ps(e.ax[m]);
    int64_t j = 0;
    for (; j + 8 <= nw; j += 8) {
      const __m256 cf = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * ldc + j)));
      const __m256 s = _mm256_mul_ps(axm, _mm256_loadu_ps(e.aw + n0 + j));
      __m256 y = _mm256_mul_ps(_mm256_mul_ps(cf, s), ds);
      if (e.bias) y = _mm256_add_ps(y, _mm256_loadu_ps(e.bias + n0 + j));
      if (e.nc) {
        __m256 o = _mm256_setzero_ps();
        for (int64_t t = 0; t < e.nc; ++t)
          o = _mm256_add_ps(o, _mm256_mul_ps(_mm256_set1_ps(e.xo[m * e.nc + t]), _mm256_loadu_ps(wdq + t * nw + j)));
        y = _mm256_add_ps(y, o);
      }
      store8(Y + m * e.ldy + n0 + j, y);
    }
    for (; j < nw; ++j) {
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

constexpr int kMT = 4, kNT = 2;

template <int MT>
LLMINT8_AVX2 void dot_tile_t(const uint8_t* A, int64_t lda, const int8_t* const* B, int nt,
                             int64_t K, int32_t* c, int64_t ldc) {
  const int8_t* b[kNT];
  for (int j = 0; j < kNT; ++j) b[j] = B[j < nt ? j : nt - 1];
  __m256i acc[MT][kNT];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < kNT; ++j) acc[i][j] = _mm256_setzero_si256();
  const __m256i off = _mm256_set1_epi16(128);
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i bv[kNT];
    for (int j = 0; j < kNT; ++j)
      bv[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[j] + k)));
    for (int i = 0; i < MT; ++i) {
      const __m256i a = _mm256_sub_epi16(
          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(A + i * lda + k))), off);
      for (int j = 0; j < kNT; ++j)
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(a, bv[j]));
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < nt; ++j) {
      alignas(32) int32_t s[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(s), acc[i][j]);
      uint32_t t = 0;
      for (int l = 0; l < 8; ++l) t += uint32_t(s[l]);
      for (int64_t kk = k; kk < K; ++kk)
        t += uint32_t((int32_t(A[i * lda + kk]) - 128) * int32_t(b[j][kk]));
      c[i * ldc + j] = int32_t(t);
    }
}

LLMINT8_AVX2 void dot_tile(const uint8_t* A, int64_t lda, int mt, const int8_t* const* B, int nt,
                           int64_t K, int32_t* c, int64_t ldc) {
  switch (mt) {
    case 1: return dot_tile_t<1>(A, lda, B, nt, K, c, ldc);
    case 2: return dot_tile_t<2>(A, lda, B, nt, K, c, ldc);
    case 3: return dot_tile_t<3>(A, lda, B, nt, K, c, ldc);
    default: return dot_tile_t<4>(A, lda, B, nt, K, c, ldc);
  }
}

}  // namespace

Kernels avx2_kernels() {
  Kernels k;
  k.isa = Isa::Avx2;
  k.quant_row[0] = quant_row<float>;
  k.quant_row[1] = quant_row<f16>;
  k.quant_row[2] = quant_row<bf16>;
  k.epilogue[0] = epilogue<float>;
  k.epilogue[1] = epilogue<f16>;
  k.epilogue[2] = epilogue<bf16>;
  k.dot_tile = dot_tile;
  k.dot_mt = kMT;
  k.dot_nt = kNT;
  return k;
}

}  // namespace llmint8::cpu

// AVX-512 VNNI kernels (AVX-512 F/BW/VL/DQ + VNNI). Every function carries a target attribute
// instead of the file being compiled with -mavx512*: the library must still load and run on a
// CPU without AVX-512, and inline functions from shared headers instantiated here must not be
// compiled with AVX-512 (the linker could pick that copy for the whole program). The driver
// calls these only when detect_isa() reports Isa::Avx512Vnni.
//
// Integer results are exact (see kernels.h for the u8 offset trick); float results follow the
// reference's operation order exactly (separate multiplies and adds, no FMA), so they are
// bit-identical to src/quant/reference.cpp.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_*() values.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>
#include <limits>

#include "cpu/kernels.h"
#include "cpu/simd_avx512.h"
#include "llmint8/backend.h"

// The float epilogue must not be contracted into FMAs: it reproduces the reference's separately
// rounded multiplies and adds bit for bit.
#pragma GCC optimize("fp-contract=off")


namespace llmint8::cpu {
namespace {

// ---- loads / stores of 16 values of each io dtype, as float -------------------------------------
LLMINT8_AVX512 inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
LLMINT8_AVX512 inline __m512 load16(const f16* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));  // exact, subnormals included
}
LLMINT8_AVX512 inline __m512 load16(const bf16* p, __mmask16 m) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

LLMINT8_AVX512 inline void store16(float* p, __m512 y, __mmask16 m) { _mm512_mask_storeu_ps(p, m, y); }
// Round to nearest even like to_f16(); NaN becomes sign | 0x7e00 exactly as to_f16() does.
LLMINT8_AVX512 inline void store16(f16* p, __m512 y, __mmask16 m) {
  __m256i h = _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __mmask16 nan = _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q);
  if (nan) {
    const __m512i u = _mm512_castps_si512(y);
    const __m512i qn = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)),
                                       _mm512_set1_epi32(0x7e00));
    h = _mm256_mask_blend_epi16(nan, h, _mm512_cvtepi32_epi16(qn));
  }
  _mm256_mask_storeu_epi16(p, m, h);
}
// Integer round-to-nearest-even like to_bf16() (vcvtneps2bf16 would flush subnormals).
LLMINT8_AVX512 inline void store16(bf16* p, __m512 y, __mmask16 m) {
  const __m512i u = _mm512_castps_si512(y);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(r));
}

LLMINT8_AVX512 inline __mmask16 tail16(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
}
LLMINT8_AVX512 inline __mmask64 tail64(int64_t left) {
  return left >= 64 ? __mmask64(~0ull) : __mmask64((1ull << left) - 1ull);
}

// ---- fused row quantization ----------------------------------------------------------------------
// Pass 1: absmax over non-outlier, non-NaN values, NaN detection and outlier marking. Pass 2, while
// the row is still in cache: q = clamp(rne(x * 127/absmax)), 0 for outliers / NaN products.
template <class T>
LLMINT8_AVX512 float quant_row(const void* xv, int64_t K, float threshold, uint8_t* q,
                               uint8_t qxor, uint8_t* mask) {
  const T* x = static_cast<const T*>(xv);
  const bool decompose = threshold > 0.f;
  const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 thr = _mm512_set1_ps(threshold);
  __m512 vmax = _mm512_setzero_ps();
  __mmask16 nan_any = 0;
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 lm = tail16(K - k);
    const __m512 v = load16(x + k, lm);
    const __m512 a = _mm512_and_ps(v, absm);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    nan_any |= nan;
    __mmask16 valid;
    if (decompose) {
      const __mmask16 om = _mm512_cmp_ps_mask(a, thr, _CMP_GE_OQ);  // NaN compares false
      if (om && mask) _mm_mask_storeu_epi8(mask + k, om, _mm_set1_epi8(1));
      valid = _mm512_cmp_ps_mask(a, thr, _CMP_LT_OQ);
    } else {
      valid = __mmask16(~nan);
    }
    vmax = _mm512_mask_max_ps(vmax, valid, vmax, a);
  }
  const float amax = _mm512_reduce_max_ps(vmax);
  if (nan_any || amax == 0.f) {
    std::memset(q, qxor, size_t(K));
    return nan_any ? std::numeric_limits<float>::quiet_NaN() : 0.f;
  }
  const __m512 inv = _mm512_set1_ps(127.0f / amax);
  const __m512 hi = _mm512_set1_ps(127.f), lo = _mm512_set1_ps(-127.f);
  const __m128i vx = _mm_set1_epi8(char(qxor));
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 lm = tail16(K - k);
    const __m512 v = load16(x + k, lm);
    __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 keep = _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q);
    if (decompose) keep &= _mm512_cmp_ps_mask(_mm512_and_ps(v, absm), thr, _CMP_LT_OQ);
    r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    const __m128i q8 = _mm512_cvtepi32_epi8(_mm512_maskz_cvtps_epi32(keep, r));
    _mm_mask_storeu_epi8(q + k, lm, _mm_xor_si128(q8, vx));
  }
  return amax;
}

// ---- dequantization epilogue ---------------------------------------------------------------------
template <class T>
LLMINT8_AVX512 void epilogue(const EpiArgs& e, int64_t m0, int64_t mc, int64_t n0, int64_t nw,
                             const int32_t* c, int64_t ldc, const float* wdq) {
  T* Y = static_cast<T*>(e.Y);
  const __m512 ds = _mm512_set1_ps(kDequantScale);
  for (int64_t i = 0; i < mc; ++i) {
    const int64_t m = m0 + i;
    const __m512 axm = _mm512_set1_ps(e.ax[m]);
    for (int64_t j = 0; j < nw; j += 16) {
      const __mmask16 lm = tail16(nw - j);
      const __m512 cf = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(lm, c + i * ldc + j));
      const __m512 s = _mm512_mul_ps(axm, _mm512_maskz_loadu_ps(lm, e.aw + n0 + j));
      __m512 y = _mm512_mul_ps(_mm512_mul_ps(cf, s), ds);
      if (e.bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(lm, e.bias + n0 + j));
      if (e.nc) {
        __m512 o = _mm512_setzero_ps();
        for (int64_t t = 0; t < e.nc; ++t)
          o = _mm512_add_ps(o, _mm512_mul_ps(_mm512_set1_ps(e.xo[m * e.nc + t]),
                                             _mm512_maskz_loadu_ps(lm, wdq + t * nw + j)));
        y = _mm512_add_ps(y, o);
      }
      store16(Y + m * e.ldy + n0 + j, y, lm);
    }
  }
}

// ---- small-M dot-product tile (decode) -----------------------------------------------------------
// Reduces 16 vectors to one: lane i = sum of the 16 int32 lanes of v[i].
LLMINT8_AVX512 inline __m512i reduce16(const __m512i* v) {
  __m512i s[8], x[4], y[2];
  for (int i = 0; i < 8; ++i)
    s[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                            _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    x[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(s[2 * i], s[2 * i + 1]),
                            _mm512_unpackhi_epi64(s[2 * i], s[2 * i + 1]));
  for (int i = 0; i < 2; ++i)
    y[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(x[2 * i], x[2 * i + 1], 0x88),
                            _mm512_shuffle_i32x4(x[2 * i], x[2 * i + 1], 0xdd));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(y[0], y[1], 0x88), _mm512_shuffle_i32x4(y[0], y[1], 0xdd));
}

constexpr int kDotN = 4;

// Streams each weight row once for MT activation rows: acc[i][j] += (a_i+128) . b_j per 64 k,
// rs[j] += 1 . b_j, then C = acc - 128 * rs after the horizontal reductions. Named accumulators
// (not arrays) so that GCC 12 keeps them all in registers.
template <int MT>
LLMINT8_AVX512 void dot_tile_t(const uint8_t* A, int64_t lda, const int8_t* const* B, int nt,
                               int64_t K, int32_t* c, int64_t ldc) {
  static_assert(MT >= 1 && MT <= 4 && kDotN == 4);
  const int8_t* b0 = B[0];
  const int8_t* b1 = B[nt > 1 ? 1 : nt - 1];  // pad by repeating a row
  const int8_t* b2 = B[nt > 2 ? 2 : nt - 1];
  const int8_t* b3 = B[nt > 3 ? 3 : nt - 1];
  const uint8_t* a0 = A;
  const uint8_t* a1 = A + (MT > 1 ? 1 : 0) * lda;
  const uint8_t* a2 = A + (MT > 2 ? 2 : 0) * lda;
  const uint8_t* a3 = A + (MT > 3 ? 3 : 0) * lda;
  const __m512i z = _mm512_setzero_si512(), ones = _mm512_set1_epi8(1);
  __m512i r0 = z, r1 = z, r2 = z, r3 = z;
  __m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  __m512i c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
#define LLMINT8_DOT_ROW(i, LOAD)                                                               \
  if constexpr (MT > i) {                                                                      \
    const __m512i av = LOAD(a##i);                                                             \
    c##i##0 = _mm512_dpbusd_epi32(c##i##0, av, w0);                                            \
    c##i##1 = _mm512_dpbusd_epi32(c##i##1, av, w1);                                            \
    c##i##2 = _mm512_dpbusd_epi32(c##i##2, av, w2);                                            \
    c##i##3 = _mm512_dpbusd_epi32(c##i##3, av, w3);                                            \
  }
#define LLMINT8_DOT_STEP(LOAD)                                                                 \
  {                                                                                            \
    const __m512i w0 = LOAD(b0), w1 = LOAD(b1), w2 = LOAD(b2), w3 = LOAD(b3);                  \
    r0 = _mm512_dpbusd_epi32(r0, ones, w0);                                                    \
    r1 = _mm512_dpbusd_epi32(r1, ones, w1);                                                    \
    r2 = _mm512_dpbusd_epi32(r2, ones, w2);                                                    \
    r3 = _mm512_dpbusd_epi32(r3, ones, w3);                                                    \
    LLMINT8_DOT_ROW(0, LOAD) LLMINT8_DOT_ROW(1, LOAD) LLMINT8_DOT_ROW(2, LOAD)                 \
    LLMINT8_DOT_ROW(3, LOAD)                                                                   \
  }
  int64_t k = 0;
#define LLMINT8_FULL(p) _mm512_loadu_si512((p) + k)
  for (; k + 64 <= K; k += 64) LLMINT8_DOT_STEP(LLMINT8_FULL)
#undef LLMINT8_FULL
  if (k < K) {
    const __mmask64 lm = tail64(K - k);
#define LLMINT8_TAIL(p) _mm512_maskz_loadu_epi8(lm, (p) + k)
    LLMINT8_DOT_STEP(LLMINT8_TAIL)
#undef LLMINT8_TAIL
  }
#undef LLMINT8_DOT_STEP
#undef LLMINT8_DOT_ROW
  const __m512i acc[4][kDotN] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                                 {c20, c21, c22, c23}, {c30, c31, c32, c33}};
  const __m512i rs[kDotN] = {r0, r1, r2, r3};
  constexpr int nv = MT * kDotN;
  __m512i v[16];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < kDotN; ++j) v[i * kDotN + j] = acc[i][j];
  // MT <= 3: the row sums ride in the same reduction; MT == 4 needs a second one.
  alignas(64) int32_t sums[32];
  if constexpr (nv + kDotN <= 16) {
    for (int j = 0; j < kDotN; ++j) v[nv + j] = rs[j];
    for (int t = nv + kDotN; t < 16; ++t) v[t] = z;
    _mm512_store_si512(sums, reduce16(v));
  } else {
    _mm512_store_si512(sums, reduce16(v));
    __m512i w[16];
    for (int j = 0; j < 16; ++j) w[j] = j < kDotN ? rs[j] : z;
    _mm512_store_si512(sums + 16, reduce16(w));
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < nt; ++j)
      c[i * ldc + j] = int32_t(uint32_t(sums[i * kDotN + j]) - 128u * uint32_t(sums[MT * kDotN + j]));
}

LLMINT8_AVX512 void dot_tile(const uint8_t* A, int64_t lda, int mt, const int8_t* const* B, int nt,
                             int64_t K, int32_t* c, int64_t ldc) {
  switch (mt) {
    case 1: return dot_tile_t<1>(A, lda, B, nt, K, c, ldc);
    case 2: return dot_tile_t<2>(A, lda, B, nt, K, c, ldc);
    case 3: return dot_tile_t<3>(A, lda, B, nt, K, c, ldc);
    default: return dot_tile_t<4>(A, lda, B, nt, K, c, ldc);
  }
}

// ---- packed path (prefill) ---------------------------------------------------------------------
LLMINT8_AVX512 void pack_panel(const int8_t* B, int64_t ldb, int nr, int64_t k0, int64_t kc,
                               int8_t* panel, int32_t* corr) {
  const int64_t nblk = (kc + 63) / 64;
  const __m512i ones = _mm512_set1_epi8(1);
  for (int g = 0; g < kPanelN / 16; ++g) {
    __m512i rs = _mm512_setzero_si512();
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const int64_t kb = k0 + blk * 64;
      const __mmask64 lm = tail64(k0 + kc - kb);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        const int n = g * 16 + i;
        r[i] = n < nr ? _mm512_maskz_loadu_epi8(lm, B + n * ldb + kb) : _mm512_setzero_si512();
      }
      transpose16(r);
      for (int q = 0; q < 16; ++q) {
        _mm512_store_si512(panel + (blk * 16 + q) * (kPanelN * 4) + g * 64, r[q]);
        rs = _mm512_dpbusd_epi32(rs, ones, r[q]);
      }
    }
    _mm512_storeu_si512(corr + g * 16, _mm512_slli_epi32(rs, 7));
  }
}

// 8 x 48 register tile: per group of 4 k, 3 weight vectors (16 n x 4 k) against 8 broadcast
// activation dwords into 24 accumulators. Named variables, not arrays: GCC 12 keeps an array of
// 24 accumulators partly on the stack. Rows past mr repeat row mr-1 and are not stored.
LLMINT8_AVX512 void micro(const uint8_t* A, int64_t lda, int mr, int64_t k0, int64_t kc,
                          const int8_t* panel, const int32_t* corr, int32_t* cacc, bool first) {
  const __m512i q0 = _mm512_loadu_si512(corr), q1 = _mm512_loadu_si512(corr + 16),
                q2 = _mm512_loadu_si512(corr + 32);
#define LLMINT8_ROW(i)                                                                          \
  const uint8_t* a##i = A + (i < mr ? i : mr - 1) * lda + k0;                                   \
  __m512i c##i##0, c##i##1, c##i##2;                                                            \
  if (first || i >= mr) {                                                                       \
    c##i##0 = _mm512_sub_epi32(_mm512_setzero_si512(), q0);                                     \
    c##i##1 = _mm512_sub_epi32(_mm512_setzero_si512(), q1);                                     \
    c##i##2 = _mm512_sub_epi32(_mm512_setzero_si512(), q2);                                     \
  } else {                                                                                      \
    c##i##0 = _mm512_sub_epi32(_mm512_loadu_si512(cacc + i * kPanelN), q0);                     \
    c##i##1 = _mm512_sub_epi32(_mm512_loadu_si512(cacc + i * kPanelN + 16), q1);                \
    c##i##2 = _mm512_sub_epi32(_mm512_loadu_si512(cacc + i * kPanelN + 32), q2);                \
  }
  LLMINT8_ROW(0) LLMINT8_ROW(1) LLMINT8_ROW(2) LLMINT8_ROW(3)
  LLMINT8_ROW(4) LLMINT8_ROW(5) LLMINT8_ROW(6) LLMINT8_ROW(7)
#undef LLMINT8_ROW
  const int64_t nkq = (kc + 3) / 4;
  for (int64_t kq = 0; kq < nkq; ++kq) {
    const int8_t* p = panel + kq * (kPanelN * 4);
    const __m512i b0 = _mm512_load_si512(p), b1 = _mm512_load_si512(p + 64),
                  b2 = _mm512_load_si512(p + 128);
#define LLMINT8_STEP(i)                                                                         \
    {                                                                                           \
      int32_t d;                                                                                \
      std::memcpy(&d, a##i + 4 * kq, 4);                                                        \
      const __m512i av = _mm512_set1_epi32(d);                                                  \
      c##i##0 = _mm512_dpbusd_epi32(c##i##0, av, b0);                                           \
      c##i##1 = _mm512_dpbusd_epi32(c##i##1, av, b1);                                           \
      c##i##2 = _mm512_dpbusd_epi32(c##i##2, av, b2);                                           \
    }
    LLMINT8_STEP(0) LLMINT8_STEP(1) LLMINT8_STEP(2) LLMINT8_STEP(3)
    LLMINT8_STEP(4) LLMINT8_STEP(5) LLMINT8_STEP(6) LLMINT8_STEP(7)
#undef LLMINT8_STEP
  }
#define LLMINT8_STORE(i)                                                                        \
  if (i < mr) {                                                                                 \
    _mm512_storeu_si512(cacc + i * kPanelN, c##i##0);                                           \
    _mm512_storeu_si512(cacc + i * kPanelN + 16, c##i##1);                                      \
    _mm512_storeu_si512(cacc + i * kPanelN + 32, c##i##2);                                      \
  }
  LLMINT8_STORE(0) LLMINT8_STORE(1) LLMINT8_STORE(2) LLMINT8_STORE(3)
  LLMINT8_STORE(4) LLMINT8_STORE(5) LLMINT8_STORE(6) LLMINT8_STORE(7)
#undef LLMINT8_STORE
}

}  // namespace

Kernels avx512_kernels() {
  Kernels k;
  k.isa = Isa::Avx512Vnni;
  k.quant_row[0] = quant_row<float>;
  k.quant_row[1] = quant_row<f16>;
  k.quant_row[2] = quant_row<bf16>;
  k.epilogue[0] = epilogue<float>;
  k.epilogue[1] = epilogue<f16>;
  k.epilogue[2] = epilogue<bf16>;
  k.dot_tile = dot_tile;
  k.dot_mt = 4;
  k.dot_nt = kDotN;
  k.pack_panel = pack_panel;
  k.micro = micro;
  return k;
}

}  // namespace llmint8::cpu

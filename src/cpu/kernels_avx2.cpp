// AVX2 tier: the int8 GEMM tile widens both operands to int16 and uses vpmaddwd (int16 x int16
// pairs summed into int32) -- exact for every int8 input. (vpmaddubsw would be twice as fast but
// saturates its int16 pair sums, so it is not exact.) Quantization and the epilogue reuse the
// scalar kernels. See kernels_avx512.cpp for why functions carry target attributes.
#include <immintrin.h>

#include <cstring>
#include <limits>

#include "cpu/kernels.h"
#include "llmint8/backend.h"

#define LLMINT8_AVX2 __attribute__((target("avx2,f16c")))

namespace llmint8::cpu {
namespace {

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
  Kernels k = scalar_kernels();  // quantization and epilogue: scalar code (exact by construction)
  k.isa = Isa::Avx2;
  k.dot_tile = dot_tile;
  k.dot_mt = kMT;
  k.dot_nt = kNT;
  return k;
}

}  // namespace llmint8::cpu

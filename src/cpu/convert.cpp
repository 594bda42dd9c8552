#include "cpu/convert.h"

#include "cpu/cpu_features.h"

#include <immintrin.h>

#include "llmint8/dtype.h"

namespace llmint8::cpu {
namespace {

__attribute__((target("avx512f"))) void widen_f16_avx512(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
  for (; i < n; ++i) d[i] = to_float(f16{s[i]});
}

__attribute__((target("avx2,f16c"))) void widen_f16_f16c(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < n; ++i) d[i] = to_float(f16{s[i]});
}

// bf16 is the top half of a float32: shift the 16 bits into place.
__attribute__((target("avx512f"))) void widen_bf16_avx512(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    _mm512_storeu_si512(d + i, _mm512_slli_epi32(v, 16));
  }
  for (; i < n; ++i) d[i] = to_float(bf16{s[i]});
}

// The CPU backend's detection: its AVX-512 tiers imply AVX-512F, its AVX2 tier AVX2 + F16C.
Isa isa() {
  static const Isa v = detect_isa();
  return v;
}
bool has_avx512() { return isa() >= Isa::Avx512Vnni; }
bool has_f16c() { return isa() >= Isa::Avx2; }

}  // namespace

void widen_f16(const uint16_t* src, float* dst, int64_t n) {
  if (has_avx512()) return widen_f16_avx512(src, dst, n);
  if (has_f16c()) return widen_f16_f16c(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = to_float(f16{src[i]});
}

void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  if (has_avx512()) return widen_bf16_avx512(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = to_float(bf16{src[i]});
}

}  // namespace llmint8::cpu

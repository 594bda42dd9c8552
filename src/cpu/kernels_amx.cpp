// AMX-INT8 GEMM tiles (Sapphire Rapids and later), computing C^T so that the weight needs no
// packing: TDPBSSD multiplies a 16 x 64 s8 tile read straight from 16 weight rows (16 n, 64 k;
// row stride K) with a 16 x 64 s8 tile of packed activations (16 groups of 4 k, each 16 m x 4 k:
// the VNNI layout, which amx_pack_act builds once per call) into a 16 n x 16 m int32 tile.
// Both operands are signed, so there is no offset and no correction: results are exact
// (int32 accumulation; |C| <= K * 128 * 128 fits for K < 131072).
//
// amx_block: tiles 0-3 accumulators (2 n-tiles x 2 m-chunks), 4-5 weight tiles, 6-7 activation
// tiles; every loaded tile feeds two TDPBSSDs.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "cpu/kernels.h"
#include "cpu/simd_avx512.h"

#define LLMINT8_AMX __attribute__((target("amx-tile,amx-int8,avx512f")))

namespace llmint8::cpu {
namespace {

struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

LLMINT8_AMX void tile_begin() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) { c.rows[t] = 16; c.colsb[t] = 64; }
  // GCC 12 does not see ldtilecfg read the struct and drops the stores above without this.
  __asm__ volatile("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

LLMINT8_AMX void tile_end() { _tile_release(); }

// Activation rows [rows <= 16] of u8 (int8 + 128) -> s8 VNNI tiles: out[(kq * 16 + m) * 4 + i] =
// A[m][4 kq + i] - 128, zero for m >= rows; kp = the padded K (a multiple of 64, <= lda).
LLMINT8_AVX512 void amx_pack_act(const uint8_t* A, int64_t lda, int rows, int64_t kp, int8_t* out) {
  const __m512i off = _mm512_set1_epi8(char(0x80));
  for (int64_t blk = 0; blk < kp / 64; ++blk) {
    __m512i r[16];
    for (int i = 0; i < 16; ++i)
      r[i] = i < rows ? _mm512_xor_si512(_mm512_loadu_si512(A + i * lda + blk * 64), off)
                      : _mm512_setzero_si512();
    transpose16(r);
    for (int q = 0; q < 16; ++q) _mm512_store_si512(out + (blk * 16 + q) * 64, r[q]);
  }
}

// Copies weight rows [rows <= nblk * 32, stride ldb, K bytes each] into tile order:
// out[((blk * steps + s) * 32 + r) * 64 + j] = B[32 blk + r][64 s + j], zero past K and rows.
LLMINT8_AVX512 void amx_pack_w(const int8_t* B, int64_t ldb, int64_t K, int64_t rows, int64_t kp,
                               int64_t nblk, int8_t* out) {
  const int64_t steps = kp / 64;
  for (int64_t blk = 0; blk < nblk; ++blk)
    for (int r = 0; r < 32; ++r) {
      const int64_t n = blk * 32 + r;
      int8_t* o = out + (blk * steps * 32 + r) * 64;
      if (n >= rows) {
        for (int64_t s = 0; s < steps; ++s) _mm512_store_si512(o + s * 2048, _mm512_setzero_si512());
        continue;
      }
      const int8_t* b = B + n * ldb;
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t left = K - 64 * s;
        const __mmask64 lm = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
        _mm512_store_si512(o + s * 2048, _mm512_maskz_loadu_epi8(lm, b + 64 * s));
      }
    }
}

// ct[(b * 2 + a) * 256 + n * 16 + m] = sum_k W[16 a + n][k] * X_b[k][m] over `steps` x 64 k.
// Weight row r of step s is at W + s * step_bytes + r * ldw (r < 32): rows in place (step_bytes
// 64, ldw K) or amx_pack_w's layout (step_bytes 2048, ldw 64). x0, x1: packed activation chunks
// (x1 null: one m-chunk only, ct entries for b = 1 untouched).
template <bool kTwo>
LLMINT8_AMX void amx_block_t(const int8_t* W, int64_t ldw, int64_t step_bytes, const int8_t* x0,
                             const int8_t* x1, int64_t steps, int32_t* ct) {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (kTwo) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const int8_t* w1 = W + 16 * ldw;
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, W + step_bytes * s, ldw);
    _tile_loadd(6, x0 + 1024 * s, 64);
    _tile_dpbssd(0, 4, 6);
    _tile_loadd(5, w1 + step_bytes * s, ldw);
    _tile_dpbssd(1, 5, 6);
    if constexpr (kTwo) {
      _tile_loadd(7, x1 + 1024 * s, 64);
      _tile_dpbssd(2, 4, 7);
      _tile_dpbssd(3, 5, 7);
    }
  }
  _tile_stored(0, ct, 64);
  _tile_stored(1, ct + 256, 64);
  if constexpr (kTwo) {
    _tile_stored(2, ct + 512, 64);
    _tile_stored(3, ct + 768, 64);
  }
}

LLMINT8_AMX void amx_block(const int8_t* W, int64_t ldw, int64_t step_bytes, const int8_t* x0,
                           const int8_t* x1, int64_t steps, int32_t* ct) {
  if (x1) amx_block_t<true>(W, ldw, step_bytes, x0, x1, steps, ct);
  else amx_block_t<false>(W, ldw, step_bytes, x0, nullptr, steps, ct);
}

// c[(16 b + m) * ldc + 16 a + n] = ct[(b * 2 + a) * 256 + n * 16 + m] for m < mrows[b], n < 16.
LLMINT8_AVX512 void amx_unpack(const int32_t* ct, int nb, const int* mrows, int32_t* c, int64_t ldc) {
  for (int b = 0; b < nb; ++b)
    for (int a = 0; a < 2; ++a) {
      __m512i r[16];
      for (int n = 0; n < 16; ++n) r[n] = _mm512_load_si512(ct + (b * 2 + a) * 256 + n * 16);
      transpose16(r);
      for (int m = 0; m < mrows[b]; ++m) _mm512_storeu_si512(c + (16 * b + m) * ldc + 16 * a, r[m]);
    }
}

}  // namespace

bool amx_available() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false;  // AMX-TILE, AMX-INT8
    // Linux keeps AMX state off until the process asks for it (ARCH_REQ_XCOMP_PERM, XTILEDATA).
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
}

Kernels amx_kernels() {
  Kernels k = avx512_kernels();
  k.isa = Isa::Amx;
  k.tile_begin = tile_begin;
  k.tile_end = tile_end;
  k.amx_pack_act = amx_pack_act;
  k.amx_pack_w = amx_pack_w;
  k.amx_block = amx_block;
  k.amx_unpack = amx_unpack;
  return k;
}

}  // namespace llmint8::cpu

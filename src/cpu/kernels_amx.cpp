// AMX-INT8 prefill tile (Sapphire Rapids and later): TDPBUSD multiplies a 16 x 64 u8 tile of A
// (16 rows, 64 k) with a 16 x 64 s8 tile of the packed weight panel (16 groups of 4 k, 16 n x 4 k
// each -- exactly the VNNI panel layout of kernels_avx512.cpp, read with a 192-byte stride) into
// a 16 x 16 int32 tile. Same u8 offset trick as the VNNI kernels: the driver subtracts
// 128 * rowsum(B) afterwards, so results are exact (wrapping int32, see kernels.h).
//
// Tiles: 0-2 accumulators (16 m x 48 n), 3 the A tile, 4-6 the three 16-column B tiles.
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "cpu/kernels.h"

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
  for (int t = 0; t < 7; ++t) { c.rows[t] = 16; c.colsb[t] = 64; }
  // GCC 12 does not see ldtilecfg read the struct and drops the stores above without this.
  __asm__ volatile("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

LLMINT8_AMX void tile_end() { _tile_release(); }

LLMINT8_AMX void amx_micro(const uint8_t* A, int64_t lda, int64_t k0, int64_t kc,
                           const int8_t* panel, int32_t* cacc, bool first) {
  constexpr int64_t ldc = kPanelN * 4, ldp = kPanelN * 4;
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
  } else {
    _tile_loadd(0, cacc, ldc);
    _tile_loadd(1, cacc + 16, ldc);
    _tile_loadd(2, cacc + 32, ldc);
  }
  const int64_t steps = (kc + 63) / 64;
  for (int64_t s = 0; s < steps; ++s) {
    const int8_t* p = panel + s * 16 * ldp;
    _tile_loadd(3, A + k0 + 64 * s, lda);
    _tile_loadd(4, p, ldp);
    _tile_loadd(5, p + 64, ldp);
    _tile_loadd(6, p + 128, ldp);
    _tile_dpbusd(0, 3, 4);
    _tile_dpbusd(1, 3, 5);
    _tile_dpbusd(2, 3, 6);
  }
  _tile_stored(0, cacc, ldc);
  _tile_stored(1, cacc + 16, ldc);
  _tile_stored(2, cacc + 32, ldc);
}

}  // namespace

bool amx_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
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
  k.amx_micro = amx_micro;
  return k;
}

}  // namespace llmint8::cpu

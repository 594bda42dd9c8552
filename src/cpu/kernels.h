// Internal interface between the CPU backend's driver (cpu_backend.cpp: blocking, threading,
// scratch) and its per-ISA kernels (kernels_{scalar,avx2,avx512}.cpp). Kernels are plain
// single-threaded functions on one tile; the driver owns all OpenMP parallelism, so no
// parallel region is ever compiled with an ISA target attribute.
//
// Activation operand convention: the GEMM kernels take A as uint8 holding int8 + 128
// (a XOR 0x80). vpdpbusd multiplies u8 x s8, so sum_k (a+128)*b = sum_k a*b + 128*sum_k b and
// the kernels subtract 128*rowsum(B) (int32, wrapping arithmetic; the true result fits in int32
// for K < 131072 even with -128*-128 products, so the wrapped intermediate is exact). This makes
// the GEMM exact for every int8 input, -128 included.
#pragma once
#include <cstdint>

#include "cpu/cpu_features.h"
#include "llmint8/dtype.h"

namespace llmint8::cpu {

// Quantizes one row of K values (x of the kernel's dtype) exactly as ref::quantize_row does,
// writing q[k] = int8 value XOR qxor (qxor 0x80 gives the u8 GEMM operand) and setting mask[k]=1
// for outlier columns when threshold > 0 and mask != null. Returns the row's absmax.
using QuantRowFn = float (*)(const void* x, int64_t K, float threshold, uint8_t* q, uint8_t qxor,
                             uint8_t* mask);

// The dequantization epilogue's inputs. Y is of the epilogue's dtype, row stride ldy.
struct EpiArgs {
  const float* ax = nullptr;    // [M] activation absmax
  const float* aw = nullptr;    // [N] weight absmax (SCB)
  const float* bias = nullptr;  // [N] or null
  void* Y = nullptr;
  int64_t ldy = 0;
  int64_t nc = 0;               // number of outlier columns
  const float* xo = nullptr;    // [M][nc] the outlier columns of X, as float
};
// Y[m, n0+j] = T( float(c[i][j]) * (ax[m]*aw[n]) * (1/16129) + bias[n] + sum_o xo[m][o]*wdq[o][j] )
// for m = m0+i, i < mc, j < nw; c has row stride ldc; wdq is [nc][nw] (the dequantized weight
// columns, already rounded to T). The outlier sum is accumulated in ascending o, separately from
// the dequantized value, like the reference, so results are bit-identical to it.
using EpilogueFn = void (*)(const EpiArgs& e, int64_t m0, int64_t mc, int64_t n0, int64_t nw,
                            const int32_t* c, int64_t ldc, const float* wdq);

// c[i*ldc + j] = sum_k (int(A[i*lda + k]) - 128) * B[j][k], exact, for i < mt <= dot_mt and
// j < nt <= dot_nt. B holds nt row pointers (each K int8).
using DotTileFn = void (*)(const uint8_t* A, int64_t lda, int mt, const int8_t* const* B, int nt,
                           int64_t K, int32_t* c, int64_t ldc);

// Packed (prefill) path, AVX-512 VNNI only. A panel holds kPanelN weight rows of one K block in
// VNNI order: for every group of 4 k, kPanelN x 4 bytes ([kq][n][4]); rows past N and k past the
// block are zero. corr[n] = 128 * sum_k B[n][k] over the block (int32, wrapping).
inline constexpr int kPanelN = 48;
inline constexpr int kMicroM = 8;
// Panel bytes for a K block of kc: kq rounded up to 16 (the packing transposes 16 x 16 dwords).
inline int64_t panel_bytes(int64_t kc) { return ((kc + 63) / 64) * 16 * kPanelN * 4; }
using PackPanelFn = void (*)(const int8_t* B, int64_t ldb, int nr, int64_t k0, int64_t kc,
                             int8_t* panel, int32_t* corr);
// cacc[i*kPanelN + j] (+)= sum_{k in block} (A[i][k]-128) * B[j][k] for i < mr <= kMicroM;
// first: overwrite, else accumulate. A rows must be readable up to k0 + round_up(kc, 4).
using MicroFn = void (*)(const uint8_t* A, int64_t lda, int mr, int64_t k0, int64_t kc,
                         const int8_t* panel, const int32_t* corr, int32_t* cacc, bool first);
// AMX tier (kernels_amx.cpp): C^T tiles from unpacked weight rows and packed activations.
// amx_pack_act: 16 u8 activation rows (int8 + 128) -> s8 VNNI tiles [kp/4][16][4] (rows >= `rows`
// zero). amx_pack_w: weight rows -> 32-row blocks in tile order [blk][step][32][64] (zero past K
// and the rows). amx_block: 32 weight rows (row r of step s at W + s*step_bytes + r*ldw) x one or
// two packed 16-row activation chunks -> ct [2 m-chunks][2 n-tiles][16 n][16 m]. amx_unpack:
// ct -> c[m][n] (32 columns, mrows[b] rows of chunk b). Callers run tile_begin() on the thread
// first and tile_end() when done.
inline constexpr int kAmxM = 16, kAmxN = 32;
using AmxPackFn = void (*)(const uint8_t* A, int64_t lda, int rows, int64_t kp, int8_t* out);
using AmxPackWFn = void (*)(const int8_t* B, int64_t ldb, int64_t K, int64_t rows, int64_t kp,
                            int64_t nblk, int8_t* out);
using AmxBlockFn = void (*)(const int8_t* W, int64_t ldw, int64_t step_bytes, const int8_t* x0,
                            const int8_t* x1, int64_t steps, int32_t* ct);
using AmxUnpackFn = void (*)(const int32_t* ct, int nb, const int* mrows, int32_t* c, int64_t ldc);

struct Kernels {
  Isa isa = Isa::Scalar;
  QuantRowFn quant_row[3] = {};  // indexed by dtype_index(): F32, F16, BF16
  EpilogueFn epilogue[3] = {};
  DotTileFn dot_tile = nullptr;
  int dot_mt = 1, dot_nt = 1;
  PackPanelFn pack_panel = nullptr;  // null: no packed path
  MicroFn micro = nullptr;
  AmxPackFn amx_pack_act = nullptr;  // non-null: AMX path for M >= kPackedMinMAmx
  AmxPackWFn amx_pack_w = nullptr;
  AmxBlockFn amx_block = nullptr;
  AmxUnpackFn amx_unpack = nullptr;
  void (*tile_begin)() = nullptr;
  void (*tile_end)() = nullptr;
};

inline int dtype_index(DType t) { return t == DType::F32 ? 0 : (t == DType::F16 ? 1 : 2); }

Kernels scalar_kernels();
Kernels avx2_kernels();
Kernels avx512_kernels();
Kernels amx_kernels();
// CPU has AMX-TILE + AMX-INT8 and the OS granted this process the AMX state.
bool amx_available();

}  // namespace llmint8::cpu

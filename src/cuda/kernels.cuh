// CUDA kernels of the LLM.int8() primitives. Numerics follow include/llmint8/backend.h and the
// scalar reference (src/quant/reference.cpp) operation for operation: every float operation that
// the reference rounds is written with an explicit __f*_rn intrinsic so that nvcc cannot contract
// it into an FMA, which makes int8/int32 results bit-identical and float outputs identical too.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/act.cuh"
#include "cuda/pdl.cuh"

namespace llmint8::cuda {

inline constexpr float kDqScale = 1.0f / 16129.0f;  // == kDequantScale
inline constexpr float kInv127 = 1.0f / 127.0f;     // == kInvInt8Max

// ---- element conversions -------------------------------------------------------------------
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// 16 bytes of T -> 16/sizeof(T) floats.
template <class T> __device__ __forceinline__ void unpack16(const uint4& u, float* f);
template <> __device__ __forceinline__ void unpack16<float>(const uint4& u, float* f) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
template <> __device__ __forceinline__ void unpack16<__half>(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h = *reinterpret_cast<const __half2*>(&w[i]);
    float2 v = __half22float2(h);
    f[2 * i] = v.x; f[2 * i + 1] = v.y;
  }
}
template <> __device__ __forceinline__ void unpack16<__nv_bfloat16>(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// The reference's quantize_value: round-half-even(v * inv) clamped to [-127,127], NaN -> 0.
__device__ __forceinline__ int quantize_value(float v, float inv) {
  float r = rintf(__fmul_rn(v, inv));
  if (r != r) return 0;
  r = fminf(fmaxf(r, -127.f), 127.f);
  return int(r);
}

// ---- block-wide helpers (blockDim.x a multiple of 32, at most 1024) -------------------------
__device__ __forceinline__ float block_max(float v, float* sh /*[32]*/) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float x = lane < nw ? sh[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    if (lane == 0) sh[0] = x;
  }
  __syncthreads();
  const float r = sh[0];
  __syncthreads();
  return r;
}

// Exclusive prefix sum of v over the block; *total gets the sum of all.
__device__ __forceinline__ int block_exclusive_scan(int v, int* sh /*[32]*/, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) sh[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int s = lane < nw ? sh[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    sh[lane] = s;  // inclusive
  }
  __syncthreads();
  const int off = (warp > 0 ? sh[warp - 1] : 0) + x - v;
  *total = sh[nw - 1];
  __syncthreads();
  return off;
}

// Ordered compaction of the outlier mask (K bytes of 0/1, padded with zeros to a multiple of 16)
// into list[0..count) ascending; resets the mask to zeros for the next call and, when user_mask
// is given, copies the mask there first. Run by ONE block after every marking block finished.
__device__ void compact_outlier_mask(uint8_t* mask, int64_t K, int* list, int* count,
                                     uint8_t* user_mask, int* sh) {
  const int64_t nvec = (K + 15) / 16;
  const int64_t per = (nvec + blockDim.x - 1) / blockDim.x;
  const int64_t v0 = min(nvec, int64_t(threadIdx.x) * per), v1 = min(nvec, v0 + per);
  uint4* m4 = reinterpret_cast<uint4*>(mask);
  int cnt = 0;
  for (int64_t v = v0; v < v1; ++v) {
    const uint4 w = __ldcg(m4 + v);  // written by other blocks: read through L2
    cnt += __popc(w.x) + __popc(w.y) + __popc(w.z) + __popc(w.w);  // bytes are 0 or 1
  }
  int total = 0;
  int off = block_exclusive_scan(cnt, sh, &total);
  for (int64_t v = v0; v < v1; ++v) {
    const uint4 w = __ldcg(m4 + v);
    const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
    if (w.x | w.y | w.z | w.w) {
#pragma unroll
      for (int b = 0; b < 16; ++b)
        if ((ws[b >> 2] >> (8 * (b & 3))) & 0xffu) list[off++] = int(v * 16 + b);
      m4[v] = make_uint4(0, 0, 0, 0);
    }
    if (user_mask)
      for (int b = 0; b < 16 && v * 16 + b < K; ++b)
        user_mask[v * 16 + b] = uint8_t((ws[b >> 2] >> (8 * (b & 3))) & 0xffu);
  }
  if (threadIdx.x == 0) *count = total;
}

// ---- quantize_rowwise ------------------------------------------------------------------------
// One block per `rows_per_block` rows (one after the other), ONE pass over X from device memory: the row is read once (16-byte loads when
// VEC), its values stashed in shared memory when stash != 0, the row absmax (values with
// NOT(|x| >= threshold), NaN flagged) reduced over the block, outlier columns marked in `mask`
// (byte stores of 1; racing blocks write the same value), then q = round_half_even(x*inv) with
// inv = 127*(1/amax) (two IEEE-rounded steps, as the contract) written from the stash. The
// outlier columns of OTHER rows are zeroed by
// zero_outlier_columns_kernel, which runs after this kernel. The last block to finish (atomic
// ticket) compacts the mask into the ascending list of outlier columns and clears it, so no host
// sync and no memset is needed between calls. (The decode path skips the zeroing kernel: its
// GEMV masks the listed columns itself.)
template <class T, bool VEC>
__global__ void quantize_rows_kernel(const T* __restrict__ X, int64_t K, float threshold,
                                     int8_t* __restrict__ Q, float* __restrict__ absmax,
                                     uint8_t* mask, int* list, int* count, unsigned* ticket,
                                     uint8_t* user_mask, int stash, int64_t M,
                                     int rows_per_block) {
  extern __shared__ uint4 row_stash[];
  __shared__ float sh_f[32];
  __shared__ int sh_i[32];
  __shared__ bool is_last;
  pdl_launch_dependents();
  const int64_t m_end = min(M, int64_t(blockIdx.x + 1) * rows_per_block);
  for (int64_t m = int64_t(blockIdx.x) * rows_per_block; m < m_end; ++m) {
    const T* x = X + m * K;
    const bool decompose = threshold > 0.f;
    float amax = 0.f;
    int has_nan = 0;
    constexpr int E = 16 / int(sizeof(T));
    const int64_t nvec = VEC ? K / E : 0;
    if constexpr (VEC) {
      // 4 independent 16-byte loads in flight per thread before any use.
      constexpr int UN = 4;
      const uint4* x4 = reinterpret_cast<const uint4*>(x);
      for (int64_t i0 = threadIdx.x; i0 < nvec; i0 += UN * int64_t(blockDim.x)) {
        uint4 u[UN];
#pragma unroll
        for (int j = 0; j < UN; ++j) {
          const int64_t i = i0 + int64_t(j) * blockDim.x;
          u[j] = i < nvec ? __ldcs(x4 + i) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < UN; ++j) {
          const int64_t i = i0 + int64_t(j) * blockDim.x;
          if (i >= nvec) break;
          if (stash) row_stash[i] = u[j];
          float f[E];
          unpack16<T>(u[j], f);
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const float a = fabsf(f[e]);
            if (f[e] != f[e]) has_nan = 1;
            else if (decompose && a >= threshold) mask[i * E + e] = 1;
            else amax = fmaxf(amax, a);
          }
        }
      }
    } else {
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        const float v = to_f(x[k]);
        const float a = fabsf(v);
        if (v != v) has_nan = 1;
        else if (decompose && a >= threshold) mask[k] = 1;
        else amax = fmaxf(amax, a);
      }
    }
    has_nan = __syncthreads_or(has_nan);
    amax = block_max(amax, sh_f);
    if (threadIdx.x == 0) absmax[m] = has_nan ? __int_as_float(0x7fc00000) : amax;
    {
      const bool zero_row = has_nan || amax == 0.f;
      // inv = 127 * (1/absmax), two IEEE roundings, as the contract (bitsandbytes' torch backend).
      const float inv = zero_row ? 0.f : __fmul_rn(127.0f, __fdiv_rn(1.0f, amax));
      int8_t* q = Q + m * K;
      if constexpr (VEC) {
        const uint4* x4 = reinterpret_cast<const uint4*>(x);
        for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
          const uint4 u = stash ? row_stash[i] : __ldg(x4 + i);
          float f[E];
          unpack16<T>(u, f);
          uint32_t w[E / 4];
#pragma unroll
          for (int j = 0; j < E / 4; ++j) w[j] = 0;
#pragma unroll
          for (int e = 0; e < E; ++e) {
            int qv = 0;
            if (!zero_row && !(decompose && fabsf(f[e]) >= threshold)) qv = quantize_value(f[e], inv);
            w[e >> 2] |= (uint32_t(qv) & 0xffu) << (8 * (e & 3));
          }
          if constexpr (E == 4) reinterpret_cast<uint32_t*>(q)[i] = w[0];
          else reinterpret_cast<uint2*>(q)[i] = make_uint2(w[0], w[1]);
        }
      } else {
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
          const float v = to_f(x[k]);
          int qv = 0;
          if (!zero_row && !(decompose && fabsf(v) >= threshold)) qv = quantize_value(v, inv);
          q[k] = int8_t(qv);
        }
      }
    }
    __syncthreads();  // the stash and the reduction scratch are reused by the next row
  }
  // The last block compacts the mask (all marking stores made visible first).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(ticket, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  compact_outlier_mask(mask, K, list, count, user_mask, sh_i);
  if (threadIdx.x == 0) *ticket = 0;
}

// Q[:, list[j]] = 0 for every outlier column (rows split over the first `row_blocks` blocks), and
// in the remaining blocks: Wg[j][n] = float(T(CB[n, list[j]] * SCB[n] / 127)) for j < min(count,
// cap), the dequantized 16-bit weight columns the outlier product multiplies (gathered once here
// instead of once per output tile).
template <class T>
__global__ void zero_outlier_columns_kernel(int8_t* Q, int64_t M, int64_t K, const int* list,
                                            const int* count, int row_blocks, const int8_t* CB,
                                            const float* SCB, int64_t N, float* Wg, int cap) {
  const int c = *count;
  if (int(blockIdx.x) < row_blocks) {
    const int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (m >= M) return;
    for (int j = 0; j < c; ++j) Q[m * K + list[j]] = 0;
    return;
  }
  const int cc = min(c, cap);
  const int64_t total = int64_t(cc) * N;
  for (int64_t i = int64_t(blockIdx.x - row_blocks) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x - row_blocks) * blockDim.x) {
    const int64_t j = i / N, n = i % N;
    const float w = __fmul_rn(__fmul_rn(float(CB[n * K + list[j]]), SCB[n]), kInv127);
    Wg[i] = to_f(from_f<T>(w));
  }
}

// ---- dequantize (+ outlier product) --------------------------------------------------------
// Y[m,n] = T( (float(C)*(ax[m]*aw[n])*(1/16129) + bias[n]) + sum_j x[m,k_j]*Wdq[n,k_j] ), the
// sum over the ascending outlier list in float, products and sums each rounded once as in the
// reference. Tile: 8 rows x 256 columns per 256-thread block, one row per warp, 8 consecutive
// columns per thread (two 16-byte streaming loads of C); few registers, many blocks in flight.
template <class T, bool OUTLIERS, bool VEC>
__global__ void __launch_bounds__(256)
dequantize_kernel(int64_t M, int64_t N, const int32_t* __restrict__ C,
                  const float* __restrict__ ax, const float* __restrict__ aw,
                  const float* __restrict__ bias, T* __restrict__ Y, const T* __restrict__ X,
                  int64_t K, const int* list, const int* count, const float* Wg, int cap,
                  const int8_t* CB) {
  constexpr int TM = 8, CH = 32;
  __shared__ float xs[TM][CH];
  __shared__ int ks[CH];
  __shared__ __align__(16) float ws[OUTLIERS ? CH : 1][256];  // Wdq of the chunk's columns
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t m = int64_t(blockIdx.y) * TM + ty, n0 = int64_t(blockIdx.x) * 256 + tx * 8;
  const bool row_ok = m < M;
  // The C loads are issued first so that their latency overlaps the outlier staging below.
  int32_t cv[8];
  if (VEC && row_ok && n0 + 8 <= N) {
    const int4 a = __ldcs(reinterpret_cast<const int4*>(C + m * N + n0));
    const int4 b = __ldcs(reinterpret_cast<const int4*>(C + m * N + n0 + 4));
    cv[0] = a.x; cv[1] = a.y; cv[2] = a.z; cv[3] = a.w;
    cv[4] = b.x; cv[5] = b.y; cv[6] = b.z; cv[7] = b.w;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) cv[e] = (row_ok && n0 + e < N) ? C[m * N + n0 + e] : 0;
  }
  float y[8];
  float acc[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = 0.f;
  bool have_outliers = false;
  if constexpr (OUTLIERS) {
    const int c = *count;
    if (c > 0) {  // uniform over the block
      for (int j0 = 0; j0 < c; j0 += CH) {
        const int nj = min(CH, c - j0);
        __syncthreads();
        if (threadIdx.x < nj) ks[threadIdx.x] = list[j0 + threadIdx.x];
        __syncthreads();
        {
          const int r = threadIdx.x / CH, jj = threadIdx.x % CH;  // 256 threads = 8 x 32
          const int64_t mr = int64_t(blockIdx.y) * TM + r;
          xs[r][jj] = (mr < M && jj < nj) ? to_f(X[mr * K + ks[jj]]) : 0.f;
        }
        // All of the chunk's dequantized weights for the block's 256 columns, loaded at once.
        const int64_t nb = int64_t(blockIdx.x) * 256;
        for (int idx = threadIdx.x; idx < nj * 64; idx += 256) {
          const int jj = idx >> 6, c4 = (idx & 63) * 4;
          const int j = j0 + jj;
          const int64_t n = nb + c4;
          if (j < cap && VEC && n + 4 <= N) {
            *reinterpret_cast<float4*>(&ws[jj][c4]) =
                *reinterpret_cast<const float4*>(Wg + int64_t(j) * N + n);
          } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              float w = 0.f;
              if (n + e < N) {
                w = j < cap ? Wg[int64_t(j) * N + n + e]
                            : to_f(from_f<T>(__fmul_rn(__fmul_rn(float(CB[(n + e) * K + ks[jj]]), aw[n + e]), kInv127)));
              }
              ws[jj][c4 + e] = w;
            }
          }
        }
        __syncthreads();
        for (int jj = 0; jj < nj; ++jj) {
          const float xv = xs[ty][jj];
          const float4 a = *reinterpret_cast<const float4*>(&ws[jj][tx * 8]);
          const float4 b = *reinterpret_cast<const float4*>(&ws[jj][tx * 8 + 4]);
          const float w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[e] = __fadd_rn(acc[e], __fmul_rn(xv, w[e]));
        }
      }
      have_outliers = true;
    }
  }
  {
    const float am = row_ok ? ax[m] : 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t n = n0 + e;
      float v = 0.f;
      if (n < N) {
        v = __fmul_rn(__fmul_rn(float(cv[e]), __fmul_rn(am, aw[n])), kDqScale);
        if (bias) v = __fadd_rn(v, bias[n]);
      }
      y[e] = have_outliers ? __fadd_rn(v, acc[e]) : v;
    }
  }
  if (!row_ok) return;
  if (VEC && n0 + 8 <= N) {
    if constexpr (sizeof(T) == 4) {
      float4* p = reinterpret_cast<float4*>(Y + m * N + n0);
      __stcs(p, make_float4(y[0], y[1], y[2], y[3]));
      __stcs(p + 1, make_float4(y[4], y[5], y[6], y[7]));
    } else {
      alignas(16) T t[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) t[e] = from_f<T>(y[e]);
      __stcs(reinterpret_cast<uint4*>(Y + m * N + n0), *reinterpret_cast<const uint4*>(t));
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (n0 + e < N) Y[m * N + n0 + e] = from_f<T>(y[e]);
  }
}

// ---- fallback int8 GEMM for shapes cuBLASLt's IMMA kernels refuse (K % 4 != 0, K = 0, ...) --
// C[m,n] = sum_k A[m,k]*B[n,k] in int32: 32x32 tile per 256-thread block, k in steps of 32.
__global__ void __launch_bounds__(256)
gemm_s8_fallback_kernel(int64_t M, int64_t N, int64_t K, const int8_t* __restrict__ A,
                        const int8_t* __restrict__ B, int32_t* __restrict__ C) {
  __shared__ int As[32][33], Bs[32][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t m0 = int64_t(blockIdx.y) * 32, n0 = int64_t(blockIdx.x) * 32;
  int acc[4] = {0, 0, 0, 0};
  for (int64_t k0 = 0; k0 < K; k0 += 32) {
    for (int i = ty; i < 32; i += 8) {
      const int64_t k = k0 + tx;
      As[i][tx] = (m0 + i < M && k < K) ? A[(m0 + i) * K + k] : 0;
      Bs[i][tx] = (n0 + i < N && k < K) ? B[(n0 + i) * K + k] : 0;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < 32; ++kk) {
      const int b = Bs[tx][kk];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += As[ty + 8 * i][kk] * b;
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 8 * i, n = n0 + tx;
    if (m < M && n < N) C[m * N + n] = acc[i];
  }
}

// ---- decode path: fused quantize + int8 tensor-core GEMV + dequant + outliers (M <= 16) -----
__device__ __forceinline__ void mma_s8_16832(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Clears the int8 bytes of outlier columns: bit i of `ob` set = byte i of the 16 is an outlier
// column (zero in every row, as the reference zeroes them after seeing all rows).
__device__ __forceinline__ void mask_outliers16(uint4& q, uint32_t ob) {
  if (ob == 0) return;
  uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t b = (ob >> (4 * i)) & 0xfu;
    const uint32_t spread = (b * 0x00204081u) & 0x01010101u;  // bit j -> byte j
    w[i] &= ~(spread * 0xffu);
  }
  q = make_uint4(w[0], w[1], w[2], w[3]);
}

// Y[m, n0:n0+32] for one 32-row weight tile and one K-slice per block; Xq [M,K] is X quantized
// row by row (quantize_rows_kernel) whose outlier columns are masked here. Each of the 8 warps
// takes every 8th 64-byte K chunk of the slice; per chunk a lane (g = lane/4, t = lane%4) loads 16
// bytes of weight rows n0+8r+g (r < 4) and 16 bytes of Xq rows g and g+8 at k = chunk*64 + 16t, so every
// weight byte is read once, with all M rows, as 16-byte streaming loads. The 16 k of a lane feed two
// m16n8k32 int8 MMAs (the same permutation of k on both operands, so the dot products are those
// of the plain layout; rows >= M are zeros). Exact int32: the 8 warps are summed in shared memory;
// with a split K the blocks add into Cacc with integer atomics (order-free, exact) and the last
// block of the tile (atomic ticket) runs the epilogue and clears Cacc and its ticket.
template <class T>
__global__ void __launch_bounds__(256)
gemv_int8_fused_kernel(const T* __restrict__ X, const int8_t* __restrict__ Xq, int M,
                       int64_t K, int64_t N,
                       const int8_t* __restrict__ CB, const float* __restrict__ SCB,
                       const float* __restrict__ bias, const float* __restrict__ absmax,
                       const int* __restrict__ list, const int* __restrict__ count,
                       int32_t* Cacc, unsigned* tickets, T* __restrict__ Y, int cps, int S) {
  extern __shared__ uint32_t obits[];  // outlier columns of this block's K slice, one bit each
  constexpr int NW = 8;  // warps
  __shared__ int red[NW][512];
  __shared__ bool is_last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int64_t total_chunks = (K + 63) / 64;
  const int64_t c_beg = int64_t(blockIdx.y) * cps, c_end = min(total_chunks, c_beg + cps);
  const int64_t kbeg = c_beg * 64;
  const int nwords = cps * 2;
  const int64_t n0 = int64_t(blockIdx.x) * 32;
  const bool v0 = g < M, v1 = g + 8 < M;
  const int8_t* x0 = Xq + int64_t(v0 ? g : 0) * K;
  const int8_t* x1 = Xq + int64_t(v1 ? g + 8 : 0) * K;
  const int8_t* wrow[4];
  bool nrow[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t n = n0 + r * 8 + g;
    nrow[r] = n < N;
    wrow[r] = CB + (nrow[r] ? n : 0) * K;
  }
  constexpr int U = 2;  // chunks per warp per step; the next step's weights load during this one
  auto load_w = [&](int64_t cc, uint4 (&dst)[U][4]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t ch = cc + NW * u;
      const int64_t k = ch * 64 + t * 16;
      const bool kin = ch < c_end && k < K;
#pragma unroll
      for (int r = 0; r < 4; ++r)
        dst[u][r] = (kin && nrow[r]) ? __ldcs(reinterpret_cast<const uint4*>(wrow[r] + k))
                                     : make_uint4(0, 0, 0, 0);
    }
  };
  int64_t cc = c_beg + warp;
  uint4 wv[U][4];
  load_w(cc, wv);  // weights do not depend on the quantize kernel: start before waiting for it
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();

  for (int i = tid; i < nwords; i += NW * 32) obits[i] = 0;
  __syncthreads();
  const int c = *count;
  for (int j = tid; j < c; j += NW * 32) {
    const int64_t k = list[j] - kbeg;
    if (k >= 0 && k < int64_t(nwords) * 32) atomicOr(&obits[k >> 5], 1u << (k & 31));
  }
  __syncthreads();

  int acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[r][i] = 0;
  for (; cc < c_end; cc += NW * U) {
    uint4 xa[U][2];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = (cc + NW * u) * 64 + t * 16;
      const bool kin = cc + NW * u < c_end && k < K;
      xa[u][0] = (kin && v0) ? __ldg(reinterpret_cast<const uint4*>(x0 + k)) : make_uint4(0, 0, 0, 0);
      xa[u][1] = (kin && v1) ? __ldg(reinterpret_cast<const uint4*>(x1 + k)) : make_uint4(0, 0, 0, 0);
    }
    const bool more = cc + NW * U < c_end;
    uint4 wn[U][4];
    if (more) load_w(cc + NW * U, wn);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = (cc + NW * u) * 64 + t * 16;
      const bool kin = cc + NW * u < c_end && k < K;
      const int64_t rel = k - kbeg;
      const uint32_t ob = kin ? (obits[rel >> 5] >> (rel & 31)) & 0xffffu : 0u;
      mask_outliers16(xa[u][0], ob);
      mask_outliers16(xa[u][1], ob);
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        mma_s8_16832(acc[r], xa[u][0].x, xa[u][1].x, xa[u][0].y, xa[u][1].y, wv[u][r].x, wv[u][r].y);
        mma_s8_16832(acc[r], xa[u][0].z, xa[u][1].z, xa[u][0].w, xa[u][1].w, wv[u][r].z, wv[u][r].w);
      }
    if (more) {
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < 4; ++r) wv[u][r] = wn[u][r];
    }
  }
  // Sum the 8 warps: red[w][m*32 + nl].
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = g + (i >= 2 ? 8 : 0), nl = r * 8 + t * 2 + (i & 1);
      red[warp][m * 32 + nl] = acc[r][i];
    }
  __syncthreads();
  constexpr int QN = 512 / (NW * 32);  // outputs per thread
  int sum[QN];
#pragma unroll
  for (int q = 0; q < QN; ++q) {
    const int idx = tid + q * NW * 32;
    int v = 0;
#pragma unroll
    for (int w = 0; w < NW; ++w) v += red[w][idx];
    sum[q] = v;
  }
  if (S > 1) {
#pragma unroll
    for (int q = 0; q < QN; ++q) {
      const int idx = tid + q * NW * 32, m = idx >> 5;
      const int64_t n = n0 + (idx & 31);
      if (m < M && n < N) atomicAdd(&Cacc[int64_t(m) * N + n], sum[q]);
    }
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&tickets[blockIdx.x], 1u) == unsigned(S - 1);
    __syncthreads();
    if (!is_last) return;
    __threadfence();
#pragma unroll
    for (int q = 0; q < QN; ++q) {
      const int idx = tid + q * NW * 32, m = idx >> 5;
      const int64_t n = n0 + (idx & 31);
      sum[q] = (m < M && n < N) ? atomicExch(&Cacc[int64_t(m) * N + n], 0) : 0;
    }
    if (tid == 0) tickets[blockIdx.x] = 0;
  }
  // Epilogue: dequantize + bias, then the outlier columns' product in the reference's order. The
  // outlier values of X and the dequantized 16-bit weights are gathered into shared memory by all
  // threads at once (32 columns at a time), so the gathers cost one memory latency per chunk.
  __shared__ int ks[32];
  __shared__ float xs[16][33];
  __shared__ float ws[32][33];
  float y[QN], o[QN];
#pragma unroll
  for (int q = 0; q < QN; ++q) {
    const int idx = tid + q * NW * 32, m = idx >> 5;
    const int64_t n = n0 + (idx & 31);
    o[q] = 0.f;
    y[q] = 0.f;
    if (m < M && n < N) {
      y[q] = __fmul_rn(__fmul_rn(float(sum[q]), __fmul_rn(absmax[m], SCB[n])), kDqScale);
      if (bias) y[q] = __fadd_rn(y[q], bias[n]);
    }
  }
  for (int j0 = 0; j0 < c; j0 += 32) {
    const int nj = min(32, c - j0);
    __syncthreads();
    if (tid < nj) ks[tid] = list[j0 + tid];
    __syncthreads();
    for (int idx = tid; idx < 16 * 32; idx += NW * 32) {
      const int m = idx >> 5, jj = idx & 31;
      xs[m][jj] = (m < M && jj < nj) ? to_f(X[int64_t(m) * K + ks[jj]]) : 0.f;
    }
    for (int idx = tid; idx < 32 * 32; idx += NW * 32) {
      const int nl = idx >> 5, jj = idx & 31;
      const int64_t n = n0 + nl;
      float w = 0.f;
      if (n < N && jj < nj)
        w = to_f(from_f<T>(__fmul_rn(__fmul_rn(float(CB[n * K + ks[jj]]), SCB[n]), kInv127)));
      ws[nl][jj] = w;
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < QN; ++q) {
      const int idx = tid + q * NW * 32, m = idx >> 5, nl = idx & 31;
      for (int jj = 0; jj < nj; ++jj) o[q] = __fadd_rn(o[q], __fmul_rn(xs[m][jj], ws[nl][jj]));
    }
  }
#pragma unroll
  for (int q = 0; q < QN; ++q) {
    const int idx = tid + q * NW * 32, m = idx >> 5;
    const int64_t n = n0 + (idx & 31);
    if (m < M && n < N) Y[int64_t(m) * N + n] = from_f<T>(c > 0 ? __fadd_rn(y[q], o[q]) : y[q]);
  }
}

// ---- decode path for few rows: quantize in every block + one warp per weight row ------------
// Shared memory of gemv_rows_kernel: Xq [M][K] int8 | outlier bits [ceil(K/32) words, padded to a
// multiple of 4] | max(outlier list [K] ints, X stash [M][K] T) (the stash holds X while it is
// quantized, so that X is read from L2 once; the list is built after).
inline size_t gemv_rows_smem_bytes(int64_t M, int64_t K, size_t tsize) {
  return size_t(M * K) + size_t((K + 127) / 128 * 4) * 4 + std::max(size_t(K) * 4, size_t(M * K) * tsize);
}

// Y[m, n] for m < M <= MM, the whole int8_linear in ONE kernel, same numerics as
// quantize_rows_kernel + gemv_int8_fused_kernel:
//  1. every block reads the M rows of X once (16-byte loads from L2, kept in a shared-memory
//     stash) and computes what quantize_rows_kernel computes -- the row absmax without NaN and
//     without values |x| >= threshold (NaN row: absmax NaN, row quantized to zeros), the outlier
//     columns (any row), q = round_half_even(x * 127 * (1/absmax)) with the outlier columns
//     zeroed -- into shared memory, and lists the outlier columns in ascending order (block scan).
//     Redundant per block, but X is a few KB while the block's first weight loads (issued before
//     waiting for X's producer) are in flight; no separate quantize kernel, no global list, no
//     host sync.
//  2. each warp streams whole weight rows: lane l reads 16-byte pieces l, l + 32, ... of row n (one
//     warp-wide load = 512 contiguous bytes), exact int32 dp4a products with Xq from shared memory,
//     no K split; warps take rows n = warp id, + warps in the grid, ...; the next row's first loads
//     are issued before the current row's reduction.
//  3. epilogue of row n: y = float(C) * (absmax[m] * SCB[n]) * (1/16129) (+ bias), plus the outlier
//     product over the list in order, x * T(CB * SCB * (1/127)), each product and sum rounded once.
//     SCB[n] and the CB values of the first 32 listed columns are loaded with row n's first
//     weights, and those columns' X values sit in shared memory: the epilogue waits on no load.
// GATED (a [gate | up] weight, N = 2I rows, Y [M, I]): a warp takes rows i and I + i one after
// the other and writes Y[m, i] = T(act(float(T(gate))) * float(T(up))) -- the values of this
// kernel's two outputs followed by the model's act_kernel, with no [M, 2I] intermediate and no
// separate launch.
// K % 16 == 0; X, CB 16-byte aligned.
template <class T, int MM, bool GATED>
__global__ void __launch_bounds__(256)
gemv_rows_kernel(const T* __restrict__ X, int M, int64_t K, int64_t N, const int8_t* __restrict__ CB,
                 const float* __restrict__ SCB, const float* __restrict__ bias, float threshold,
                 int act, T* __restrict__ Y) {
  extern __shared__ uint4 smem4[];
  __shared__ float sh_f[32], s_amax[MM], s_xo[MM][32];
  __shared__ int sh_i[32], s_count;
  constexpr int U = 8;  // 16-byte weight loads per lane in flight
  constexpr int E = 16 / int(sizeof(T));
  const int tid = threadIdx.x, lane = tid & 31;
  const int64_t K16 = K / 16, KE = K / E, nwords = (K + 31) / 32, warps = int64_t(gridDim.x) * 8;
  int8_t* xs = reinterpret_cast<int8_t*>(smem4);
  uint32_t* obits = reinterpret_cast<uint32_t*>(xs + int64_t(M) * K);
  int* list = reinterpret_cast<int*>(obits + (nwords + 3) / 4 * 4);
  T* stash = reinterpret_cast<T*>(list);  // X rows while quantizing; the list after
  // Rows of this warp: n = warp id, + warps in the grid, ...; GATED: i, I + i, i + warps, ...
  const int64_t I = N / 2;
  auto next_row = [&](int64_t r) -> int64_t {
    if constexpr (GATED) return r < I ? r + I : (r - I + warps < I ? r - I + warps : N);
    else return r + warps;
  };
  int64_t n = int64_t(blockIdx.x) * 8 + (tid >> 5);
  if (GATED && n >= I) n = N;
  uint4 w[U];
  auto load = [&](int64_t row, int64_t p0, uint4 (&dst)[U]) {
    const uint4* r = reinterpret_cast<const uint4*>(CB + row * K);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t idx = p0 + lane + 32 * u;
      dst[u] = (row < N && idx < K16) ? __ldcs(r + idx) : make_uint4(0, 0, 0, 0);
    }
  };
  load(n, 0, w);  // weights do not depend on X: start before waiting for X's producer
  float scb = n < N ? SCB[n] : 0.f;  // the epilogue's scale, fetched with the row (no stall there)
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();

  // 1. X into the stash, absmax and outlier bits; then quantize into shared memory.
  for (int64_t i = tid; i < nwords; i += blockDim.x) obits[i] = 0;
  __syncthreads();
  const bool decompose = threshold > 0.f;
  for (int m = 0; m < M; ++m) {
    const uint4* x4 = reinterpret_cast<const uint4*>(X + int64_t(m) * K);
    float amax = 0.f;
    int has_nan = 0;
    for (int64_t i = tid; i < KE; i += blockDim.x) {
      const uint4 raw = __ldg(x4 + i);
      float f[E];
      unpack16<T>(raw, f);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float a = fabsf(f[e]);
        if (f[e] != f[e]) has_nan = 1;
        else if (decompose && a >= threshold) {
          const int64_t k = i * E + e;
          atomicOr(&obits[k >> 5], 1u << (k & 31));
        } else amax = fmaxf(amax, a);
      }
      *reinterpret_cast<uint4*>(stash + int64_t(m) * K + i * E) = raw;
    }
    has_nan = __syncthreads_or(has_nan);
    amax = block_max(amax, sh_f);
    if (tid == 0) s_amax[m] = has_nan ? __int_as_float(0x7fc00000) : amax;
  }
  __syncthreads();
  for (int m = 0; m < M; ++m) {
    const float amax = s_amax[m];
    const bool zero_row = amax != amax || amax == 0.f;
    const float inv = zero_row ? 0.f : __fmul_rn(127.0f, __fdiv_rn(1.0f, amax));
    const uint4* x4 = reinterpret_cast<const uint4*>(stash + int64_t(m) * K);
    for (int64_t i = tid; i < KE; i += blockDim.x) {
      float f[E];
      unpack16<T>(x4[i], f);
      uint32_t q[E / 4];
#pragma unroll
      for (int j = 0; j < E / 4; ++j) q[j] = 0;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int64_t k = i * E + e;
        int qv = 0;
        if (!zero_row && !((obits[k >> 5] >> (k & 31)) & 1u)) qv = quantize_value(f[e], inv);
        q[e >> 2] |= (uint32_t(qv) & 0xffu) << (8 * (e & 3));
      }
      int8_t* dst = xs + int64_t(m) * K + i * E;
      if constexpr (E == 4) *reinterpret_cast<uint32_t*>(dst) = q[0];
      else *reinterpret_cast<uint2*>(dst) = make_uint2(q[0], q[1]);
    }
  }
  __syncthreads();  // the stash is read: the list may overwrite it
  {  // the outlier list, ascending: contiguous word ranges per thread, offsets by a block scan
    const int64_t per = (nwords + blockDim.x - 1) / blockDim.x;
    const int64_t w0 = min(nwords, int64_t(tid) * per), w1 = min(nwords, w0 + per);
    int cnt = 0;
    for (int64_t wi = w0; wi < w1; ++wi) cnt += __popc(obits[wi]);
    int total = 0;
    int off = block_exclusive_scan(cnt, sh_i, &total);  // synchronises the block
    // The first 32 listed columns' X values, for every row's epilogue, taken from the stash
    // before the list overwrites it (their weights come with each row's first loads: wo).
    for (int64_t wi = w0, o = off; wi < w1 && o < 32; ++wi)
      for (uint32_t b = obits[wi]; b && o < 32; b &= b - 1, ++o)
        for (int m = 0; m < M; ++m) s_xo[m][o] = to_f(stash[int64_t(m) * K + wi * 32 + __ffs(b) - 1]);
    __syncthreads();
    for (int64_t wi = w0; wi < w1; ++wi)
      for (uint32_t b = obits[wi]; b; b &= b - 1) list[off++] = int(wi * 32 + __ffs(b) - 1);
    if (tid == 0) s_count = total;
  }
  __syncthreads();
  const int c = s_count, c32 = min(c, 32);
  const int col = lane < c32 ? list[lane] : 0;
  int wo = (lane < c32 && n < N) ? int(CB[n * K + col]) : 0;
  const uint4* xs4 = smem4;

  // 2. + 3. Stream the weight rows.
  float gate = 0.f;  // GATED: act(gate row's output) of row m, in lane m
  for (; n < N; n = next_row(n)) {
    const int64_t nn = next_row(n);
    int acc[MM];
#pragma unroll
    for (int m = 0; m < MM; ++m) acc[m] = 0;
    float scb_next = 0.f;
    int wo_next = 0;
    for (int64_t p0 = 0; p0 < K16; p0 += 32 * U) {
      uint4 wn[U];
      if (p0 + 32 * U < K16) {
        load(n, p0 + 32 * U, wn);
      } else {  // the next row (zeros past N), and its epilogue inputs
        load(nn, 0, wn);
        if (nn < N) {
          scb_next = SCB[nn];
          if (lane < c32) wo_next = CB[nn * K + col];
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t idx = p0 + lane + 32 * u;
        if (idx < K16) {
#pragma unroll
          for (int m = 0; m < MM; ++m) {
            if (m < M) {
              const uint4 xv = xs4[m * K16 + idx];
              acc[m] = __dp4a(int(w[u].x), int(xv.x), acc[m]);
              acc[m] = __dp4a(int(w[u].y), int(xv.y), acc[m]);
              acc[m] = __dp4a(int(w[u].z), int(xv.z), acc[m]);
              acc[m] = __dp4a(int(w[u].w), int(xv.w), acc[m]);
            }
          }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) w[u] = wn[u];
    }
    // Exact int32 sums over the warp; then the epilogue of row n for every m, in every lane.
    float o[MM];
#pragma unroll
    for (int m = 0; m < MM; ++m) {
      acc[m] = __reduce_add_sync(0xffffffffu, acc[m]);
      o[m] = 0.f;
    }
    for (int j0 = 0; j0 < c; j0 += 32) {
      const int nj = min(32, c - j0);
      // Lane j holds outlier column j0 + j: its dequantized 16-bit weight and the X values (the
      // first 32 from registers and shared memory, any further ones gathered here).
      float wdq = 0.f, xv[MM];
      if (lane < nj) {
        const int k = j0 == 0 ? col : list[j0 + lane];
        const int cb = j0 == 0 ? wo : int(CB[n * K + k]);
        wdq = to_f(from_f<T>(__fmul_rn(__fmul_rn(float(cb), scb), kInv127)));
#pragma unroll
        for (int m = 0; m < MM; ++m) xv[m] = m < M ? (j0 == 0 ? s_xo[m][lane] : to_f(X[int64_t(m) * K + k])) : 0.f;
      } else {
#pragma unroll
        for (int m = 0; m < MM; ++m) xv[m] = 0.f;
      }
      for (int jj = 0; jj < nj; ++jj) {  // in list order, each product and sum rounded once
        const float wj = __shfl_sync(0xffffffffu, wdq, jj);
#pragma unroll
        for (int m = 0; m < MM; ++m) o[m] = __fadd_rn(o[m], __fmul_rn(__shfl_sync(0xffffffffu, xv[m], jj), wj));
      }
    }
#pragma unroll
    for (int m = 0; m < MM; ++m) {
      if (m < M && lane == m) {
        float y = __fmul_rn(__fmul_rn(float(acc[m]), __fmul_rn(s_amax[m], scb)), kDqScale);
        if (bias) y = __fadd_rn(y, bias[n]);
        const T yt = from_f<T>(c > 0 ? __fadd_rn(y, o[m]) : y);
        if constexpr (GATED) {
          if (n < I) gate = act_f(act, to_f(yt));
          else Y[int64_t(m) * I + n - I] = from_f<T>(__fmul_rn(gate, to_f(yt)));
        } else {
          Y[int64_t(m) * N + n] = yt;
        }
      }
    }
    scb = scb_next;
    wo = wo_next;
  }
}

}  // namespace llmint8::cuda

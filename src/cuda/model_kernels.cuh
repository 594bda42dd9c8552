// CUDA kernels of the GPU transformer (src/cuda/cuda_model.cu): embeddings, norms, RoPE + KV
// cache append, attention, activations, residual adds. T is the 16-bit activation type (__half or
// __nv_bfloat16); the residual stream is float32. Each kernel follows the CPU model
// (src/model/transformer.cpp) operation for operation in float32 (double where the CPU sums in
// double); results differ from the CPU only by the 16-bit rounding of the activations between
// Linears and of the KV cache.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/act.cuh"
#include "cuda/pdl.cuh"

namespace llmint8::cuda::mk {

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T of_f(float x);
template <> __device__ __forceinline__ float of_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half of_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 of_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ __forceinline__ double block_sum_d(double v, double* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum_d(v);
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double t = lane < nw ? red[lane] : 0.0;
  return warp_sum_d(t);
}

// The tokens of a forward pass as query groups: token m is token m % Mq of group g = m / Mq, at
// position start[g] + m % Mq of sequence g's cache, which lies seq_stride elements after group
// g - 1's (one sequence's prompt or step: one group of M tokens; a batched step: M groups of 1).
// Positions are read from device memory so that a captured graph serves every step.
struct QueryGroups {
  const int* start;
  int Mq;
  int64_t seq_stride;
  __device__ int group(int m) const { return m / Mq; }
  __device__ int pos(int m) const { return start[m / Mq] + m % Mq; }
};

// x[m, :] = emb[tok[m], :] (+ pos[position(m) + pos_offset, :]) in float32. One block per token.
// emb may be pinned host memory (read over PCIe): rows as 16-byte loads when H % 8 == 0.
template <class T>
__global__ void embed_kernel(const int32_t* __restrict__ tok, int64_t H, const T* __restrict__ emb,
                             const T* __restrict__ pos, QueryGroups qg, int pos_offset, float* __restrict__ x) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  const int m = blockIdx.x;
  const T* e = emb + int64_t(tok[m]) * H;
  const T* pe = pos ? pos + int64_t(qg.pos(m) + pos_offset) * H : nullptr;
  if (H % 8 == 0 && reinterpret_cast<uintptr_t>(emb) % 16 == 0 && !pe) {
    for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) {
      const uint4 u = reinterpret_cast<const uint4*>(e)[i];
      const T* t8 = reinterpret_cast<const T*>(&u);
      float4* xo = reinterpret_cast<float4*>(x + int64_t(m) * H + i * 8);
      xo[0] = make_float4(to_f(t8[0]), to_f(t8[1]), to_f(t8[2]), to_f(t8[3]));
      xo[1] = make_float4(to_f(t8[4]), to_f(t8[5]), to_f(t8[6]), to_f(t8[7]));
    }
    return;
  }
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float v = to_f(e[i]);
    if (pe) v = v + to_f(pe[i]);
    x[int64_t(m) * H + i] = v;
  }
}

// The residual add of residual_kernel, for one element: (a2 ? a2 + a1 : a1) + (res_t ? res_t : res).
struct ResidualAdd {
  const void* a1 = nullptr;  // T; null = no add
  const void* a2 = nullptr;
  const void* res_t = nullptr;
  template <class T>
  __device__ float apply(int64_t i, float res_f) const {
    float v = to_f(static_cast<const T*>(a1)[i]);
    if (a2) v = __fadd_rn(to_f(static_cast<const T*>(a2)[i]), v);
    return __fadd_rn(res_t ? to_f(static_cast<const T*>(res_t)[i]) : res_f, v);
  }
};

// One row per block. RMSNorm: y = w * (x * float(1/sqrt(mean(x^2) + eps))), sum of squares in
// double. LayerNorm: y = float((x - mean) / sqrt(var + eps)) * w + b, mean and biased variance in
// double. Writes y as T to out_t and/or as float to out_f (in place on x allowed: the row is fully
// read before it is written). VEC (H % 4 == 0): 16-byte loads of x.
// With add.a1 set, the residual add comes first, fused: x = add(x) is computed, written back to x
// (in place) and normalized -- the values and sums of residual_kernel then norm_kernel, one launch
// fewer per add. (add.res_t must not alias out_t: another thread may write out_t[i] first.)
template <class T, bool VEC>
__global__ void __launch_bounds__(1024) norm_kernel(float* x, int64_t H,
                                                    const float* __restrict__ w, const float* __restrict__ b,
                                                    double eps, bool rms, T* out_t, float* out_f,
                                                    ResidualAdd add) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  __shared__ double red[32];
  float* xr = x + int64_t(blockIdx.x) * H;
  const int64_t row0 = int64_t(blockIdx.x) * H;
  const int H4 = VEC ? int(H / 4) : 0;
  const bool in_regs = VEC && rms && H4 <= 2 * int(blockDim.x);
  float4 wv[2];
  if (in_regs)  // w does not depend on the kernel before: read it before waiting for that one
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = threadIdx.x + r * int(blockDim.x);
      if (i < H4) wv[r] = reinterpret_cast<const float4*>(w)[i];
    }
  pdl_wait_primary();
  if (in_regs) {
    // Decode-sized rows: the row stays in registers (x + add, then y) and w is read before the
    // reduction -- one global round trip fewer; the same operations in the same order as below.
    float4 v[2];
    double s2 = 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = threadIdx.x + r * int(blockDim.x);
      if (i >= H4) continue;
      v[r] = reinterpret_cast<const float4*>(xr)[i];
      if (add.a1) {
        const int64_t e = row0 + 4 * int64_t(i);
        v[r] = make_float4(add.apply<T>(e, v[r].x), add.apply<T>(e + 1, v[r].y), add.apply<T>(e + 2, v[r].z),
                           add.apply<T>(e + 3, v[r].w));
        reinterpret_cast<float4*>(xr)[i] = v[r];
      }
      s2 += double(v[r].x) * v[r].x + double(v[r].y) * v[r].y + double(v[r].z) * v[r].z + double(v[r].w) * v[r].w;
    }
    const double ss = block_sum_d(s2, red);
    const float inv = float(1.0 / sqrt(ss / double(H) + eps));
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = threadIdx.x + r * int(blockDim.x);
      if (i >= H4) continue;
      const float4 y = make_float4(__fmul_rn(wv[r].x, __fmul_rn(v[r].x, inv)), __fmul_rn(wv[r].y, __fmul_rn(v[r].y, inv)),
                                   __fmul_rn(wv[r].z, __fmul_rn(v[r].z, inv)), __fmul_rn(wv[r].w, __fmul_rn(v[r].w, inv)));
      const int64_t o = int64_t(blockIdx.x) * H + 4 * int64_t(i);
      if (out_t) {
        out_t[o] = of_f<T>(y.x);
        out_t[o + 1] = of_f<T>(y.y);
        out_t[o + 2] = of_f<T>(y.z);
        out_t[o + 3] = of_f<T>(y.w);
      }
      if (out_f) reinterpret_cast<float4*>(out_f)[o / 4] = y;
    }
    return;
  }
  double s1 = 0, s2 = 0;
  if (VEC) {
    for (int i = threadIdx.x; i < H4; i += blockDim.x) {
      float4 v = reinterpret_cast<const float4*>(xr)[i];
      if (add.a1) {
        const int64_t e = row0 + 4 * int64_t(i);
        v = make_float4(add.apply<T>(e, v.x), add.apply<T>(e + 1, v.y), add.apply<T>(e + 2, v.z),
                        add.apply<T>(e + 3, v.w));
        reinterpret_cast<float4*>(xr)[i] = v;
      }
      s1 += double(v.x) + double(v.y) + double(v.z) + double(v.w);
      s2 += double(v.x) * v.x + double(v.y) * v.y + double(v.z) * v.z + double(v.w) * v.w;
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      float v = xr[i];
      if (add.a1) {
        v = add.apply<T>(row0 + i, v);
        xr[i] = v;
      }
      s1 += double(v);
      s2 += double(v) * double(v);
    }
  }
  // (The reductions below synchronise the block: the added row is visible to every thread.)
  if (rms) {
    const double ss = block_sum_d(s2, red);
    const float inv = float(1.0 / sqrt(ss / double(H) + eps));
    __syncthreads();
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      const float y = __fmul_rn(w[i], __fmul_rn(xr[i], inv));
      if (out_t) out_t[int64_t(blockIdx.x) * H + i] = of_f<T>(y);
      if (out_f) out_f[int64_t(blockIdx.x) * H + i] = y;
    }
  } else {
    const double mean = block_sum_d(s1, red) / double(H);
    double v = 0;
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      const double d = double(xr[i]) - mean;
      v += d * d;
    }
    const double inv = 1.0 / sqrt(block_sum_d(v, red) / double(H) + eps);
    __syncthreads();
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      const float y = __fadd_rn(__fmul_rn(float((double(xr[i]) - mean) * inv), w[i]), b[i]);
      if (out_t) out_t[int64_t(blockIdx.x) * H + i] = of_f<T>(y);
      if (out_f) out_f[int64_t(blockIdx.x) * H + i] = y;
    }
  }
}

// out[i] = (a2 ? a2[i] + a1[i] : a1[i]) + (res_t ? res_t[i] : res_f[i]), float32; out may alias
// res_f.
template <class T>
__global__ void residual_kernel(int64_t n, const T* __restrict__ a1, const T* __restrict__ a2,
                                const T* res_t, const float* res_f, float* out) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = to_f(a1[i]);
    if (a2) v = __fadd_rn(to_f(a2[i]), v);
    out[i] = __fadd_rn(res_t ? to_f(res_t[i]) : res_f[i], v);
  }
}

template <class T>
__global__ void to_t_kernel(int64_t n, const float* __restrict__ x, T* __restrict__ y) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = of_f<T>(x[i]);
}

// y[m, n] = T(float(y[m, n]) + bias[n]).
template <class T>
__global__ void bias_kernel(int64_t M, int64_t N, const float* __restrict__ bias, T* y) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = of_f<T>(__fadd_rn(to_f(y[i]), bias[i % N]));
}

// Gated: u[m, i] = act(gu[m, i]) * gu[m, I + i] (gu = [gate | up] per row). Plain (gu == null):
// u = act(u) in place.
template <class T>
__global__ void act_kernel(int64_t M, int64_t I, const T* __restrict__ gu, T* u, int act) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < M * I; idx += int64_t(gridDim.x) * blockDim.x) {
    if (gu) {
      const int64_t m = idx / I, i = idx % I;
      const float g = act_f(act, to_f(gu[m * 2 * I + i]));
      u[idx] = of_f<T>(__fmul_rn(g, to_f(gu[m * 2 * I + I + i])));
    } else {
      u[idx] = of_f<T>(act_f(act, to_f(u[idx])));
    }
  }
}

// RoPE (rotate-half on the first 2*half dims of every head, angle = float(pos) * inv_freq[i],
// cos/sin in double as the CPU does) of q in place in qkv [M, ldq] = [q | k | v] rows, and the
// (rotated) k and v of each token appended to its sequence's cache at its position (QueryGroups).
// Block (m, h): h < NH rotates q head h; h >= NH writes kv head h - NH to the cache.
template <class T>
__global__ void rope_kv_kernel(T* qkv, int64_t ldq, int NH, int NKV, int D, int half,
                               const float* __restrict__ inv_freq, QueryGroups qg, T* Kc, T* Vc) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  const int m = blockIdx.x, h = blockIdx.y;
  const int pos = qg.pos(m);
  Kc += qg.group(m) * qg.seq_stride;
  Vc += qg.group(m) * qg.seq_stride;
  T* row = qkv + int64_t(m) * ldq;
  const int kvd = NKV * D, qd = NH * D;
  const bool is_q = h < NH;
  T* x = is_q ? row + h * D : row + qd + (h - NH) * D;
  T* dst = is_q ? x : Kc + int64_t(pos) * kvd + (h - NH) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    if (!is_q) {
      Vc[int64_t(pos) * kvd + (h - NH) * D + d] = row[qd + kvd + (h - NH) * D + d];
      if (d >= 2 * half) dst[d] = x[d];
    }
    if (d < half) {
      const float ang = __fmul_rn(float(pos), inv_freq[d]);
      double sd, cd;
      sincos(double(ang), &sd, &cd);
      const float c = float(cd), sn = float(sd);
      const float x0 = to_f(x[d]), x1 = to_f(x[d + half]);
      dst[d] = of_f<T>(__fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn)));
      dst[d + half] = of_f<T>(__fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, sn)));
    }
  }
}
// No RoPE: k and v appended as they are.
template <class T>
__global__ void kv_append_kernel(const T* qkv, int64_t ldq, int qd, int kvd, QueryGroups qg, T* Kc, T* Vc) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  const int m = blockIdx.x;
  const int pos = qg.pos(m);
  Kc += qg.group(m) * qg.seq_stride;
  Vc += qg.group(m) * qg.seq_stride;
  const T* row = qkv + int64_t(m) * ldq;
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    Kc[int64_t(pos) * kvd + i] = row[qd + i];
    Vc[int64_t(pos) * kvd + i] = row[qd + kvd + i];
  }
}

// ---- attention ---------------------------------------------------------------------------------
// Causal (optionally sliding-window, ALiBi) attention of M new queries over the cache, with an
// online softmax over tiles of 32 keys: no [M, T] score matrix is ever stored. The queries come in
// query groups (QueryGroups: one sequence's Mq consecutive tokens, each group over its own cache).
// Rows are the (query, head) pairs of one group and one kv head (GQA: the `group` heads sharing it
// are neighbours, so one K/V tile in shared memory serves all of them); a block takes 16 rows of
// one query group, warp w rows w and w + 8 (decode's few rows land on different warps).
// Per tile, lane j scores key j (dot over D in float, * scale, + slope * j), the warp updates the
// running max m, sum l and the output accumulator (lane owns dims lane + 32 i). With S > 1 the key
// range is split over gridDim.z blocks that write (m, l, acc) partials, merged by
// attn_combine_kernel (flash-decoding); with S == 1 the block writes acc / l directly.
constexpr int kAttnRows = 16, kAttnKeys = 32, kAttnThreads = 256, kAttnMaxDPL = 8;  // D <= 256
constexpr int kAttnMaxSplits = 128;

template <class T>
struct AttnParams {
  const T* q;
  int64_t ldq;
  const T* K;
  const T* V;
  T* out;  // [M, NH * D]
  float* part_acc;  // [S, M, NH, D]
  float* part_ml;   // [S, M, NH, 2]
  QueryGroups qg;
  const float* slopes;  // ALiBi per head or null
  float scale;
  int M, NH, NKV, D, window, S;
};

// Shared-memory row pitch of a K/V tile (elements): odd in 4-byte words for scalar access, an
// odd number of 16-byte units apart for the 16-byte (VEC) path -- no bank conflicts either way.
__host__ __device__ inline int attn_dpad(int D, bool vec) { return vec ? D + 8 : ((D / 2) % 2 == 0 ? D + 2 : D); }
inline size_t attn_smem_bytes(int D, int tsize, bool vec) {
  return size_t(kAttnRows) * D * 4 + size_t(2) * kAttnKeys * attn_dpad(D, vec) * tsize;
}

// sum_d q[d] * k[d] over D (a multiple of 8) in float, fmaf in order of d: q float32 in shared
// memory (16-byte aligned), k a 16-byte aligned row of T in shared memory.
template <class T>
__device__ __forceinline__ float dot_q_k8(const float* q, const T* k, int D) {
  float dot = 0.f;
  for (int d = 0; d < D; d += 8) {
    const uint4 kv = *reinterpret_cast<const uint4*>(k + d);
    const T* k8 = reinterpret_cast<const T*>(&kv);
    const float4 q0 = *reinterpret_cast<const float4*>(q + d);
    const float4 q1 = *reinterpret_cast<const float4*>(q + d + 4);
    dot = fmaf(q0.x, to_f(k8[0]), dot);
    dot = fmaf(q0.y, to_f(k8[1]), dot);
    dot = fmaf(q0.z, to_f(k8[2]), dot);
    dot = fmaf(q0.w, to_f(k8[3]), dot);
    dot = fmaf(q1.x, to_f(k8[4]), dot);
    dot = fmaf(q1.y, to_f(k8[5]), dot);
    dot = fmaf(q1.z, to_f(k8[6]), dot);
    dot = fmaf(q1.w, to_f(k8[7]), dot);
  }
  return dot;
}

// VEC (D % 8 == 0): K/V tiles move as 16-byte vectors, all of a thread's loads issued before its
// stores, and the score dot products read 8 keys' elements per shared-memory access.
template <class T, bool VEC>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttnParams<T> p) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  extern __shared__ float4 smem_f4[];
  float* smem_f = reinterpret_cast<float*>(smem_f4);
  const int D = p.D, group = p.NH / p.NKV, Dp = attn_dpad(D, VEC), kvd = p.NKV * D;
  const int kvh = blockIdx.y, split = blockIdx.z;
  // Rows R of query group qgi: query qgi * Mq + R / group (position p0 + R / group), head R % group.
  const int rows_total = p.qg.Mq * group, blocks_per_group = (rows_total + kAttnRows - 1) / kAttnRows;
  const int qgi = blockIdx.x / blocks_per_group, row0 = (blockIdx.x % blocks_per_group) * kAttnRows;
  const int p0 = p.qg.start[qgi], q0 = qgi * p.qg.Mq;
  const T* Kg = p.K + qgi * p.qg.seq_stride;
  const T* Vg = p.V + qgi * p.qg.seq_stride;
  float* qs = smem_f;
  T* ks = reinterpret_cast<T*>(qs + kAttnRows * D);
  T* vs = ks + kAttnKeys * Dp;

  const int rlast = min(row0 + kAttnRows, rows_total) - 1;
  const int qfirst = p0 + row0 / group, qlast = p0 + rlast / group;
  const int kbeg = p.window > 0 ? max(0, qfirst - p.window + 1) : 0;
  const int kend = qlast + 1;
  // Keys per split: a multiple of the tile once there are more keys than splits have tiles.
  int per = (kend - kbeg + p.S - 1) / p.S;
  if (per > kAttnKeys) per = (per + kAttnKeys - 1) / kAttnKeys * kAttnKeys;
  const int sb = kbeg + split * per, se = min(kend, sb + per);
  if (sb < se)
    for (int i = threadIdx.x; i < kAttnRows * D; i += blockDim.x) {
      const int r = i / D, d = i % D, R = row0 + r;
      float v = 0.f;
      if (R < rows_total) v = to_f(p.q[int64_t(q0 + R / group) * p.ldq + (kvh * group + R % group) * D + d]);
      qs[i] = v;
    }

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float mrun[2] = {-INFINITY, -INFINITY}, lrun[2] = {0.f, 0.f};
  float acc[2][kAttnMaxDPL];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr)
#pragma unroll
    for (int i = 0; i < kAttnMaxDPL; ++i) acc[rr][i] = 0.f;

  for (int k0 = sb; k0 < se; k0 += kAttnKeys) {
    __syncthreads();
    if (VEC) {
      // <= 4 16-byte chunks of K and of V per thread (32 keys x D <= 256 halves / 256 threads).
      const int D8 = D / 8, n = kAttnKeys * D8;
      uint4 kr[4], vr[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int c = threadIdx.x + u * kAttnThreads;
        kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
        if (c < n) {
          const int j = c / D8, key = k0 + j;
          if (key < se) {
            const int64_t off = int64_t(key) * kvd + kvh * D + (c - j * D8) * 8;
            kr[u] = *reinterpret_cast<const uint4*>(Kg + off);
            vr[u] = *reinterpret_cast<const uint4*>(Vg + off);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int c = threadIdx.x + u * kAttnThreads;
        if (c < n) {
          const int j = c / D8, o = j * Dp + (c - j * D8) * 8;
          *reinterpret_cast<uint4*>(ks + o) = kr[u];
          *reinterpret_cast<uint4*>(vs + o) = vr[u];
        }
      }
    } else {
      for (int i = threadIdx.x; i < kAttnKeys * D; i += blockDim.x) {
        const int j = i / D, d = i % D, key = k0 + j;
        T kv = of_f<T>(0.f), vv = of_f<T>(0.f);
        if (key < se) {
          kv = Kg[int64_t(key) * kvd + kvh * D + d];
          vv = Vg[int64_t(key) * kvd + kvh * D + d];
        }
        ks[j * Dp + d] = kv;
        vs[j * Dp + d] = vv;
      }
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int r = warp + rr * 8, R = row0 + r;
      if (R >= rows_total) continue;  // warp-uniform
      const int h = kvh * group + R % group, qpos = p0 + R / group;
      const int key = k0 + lane;
      const bool valid = key < se && key <= qpos && (p.window <= 0 || key > qpos - p.window);
      float s = -INFINITY;
      if (valid) {
        const float* qr = qs + r * D;
        const T* kr = ks + lane * Dp;
        float dot = 0.f;
        if (VEC) {
          dot = dot_q_k8(qr, kr, D);
        } else {
          for (int d = 0; d < D; ++d) dot = fmaf(qr[d], to_f(kr[d]), dot);
        }
        s = dot * p.scale;
        if (p.slopes) s += p.slopes[h] * float(key);
      }
      const float mnew = fmaxf(mrun[rr], warp_max(s));
      if (mnew == -INFINITY) continue;  // no valid key yet (warp-uniform)
      const float corr = expf(mrun[rr] - mnew);
      const float pj = valid ? expf(s - mnew) : 0.f;
      lrun[rr] = lrun[rr] * corr + warp_sum(pj);
      mrun[rr] = mnew;
#pragma unroll
      for (int i = 0; i < kAttnMaxDPL; ++i) acc[rr][i] *= corr;
      const int nk = min(kAttnKeys, se - k0);
      for (int j = 0; j < nk; ++j) {
        const float pjj = __shfl_sync(0xffffffffu, pj, j);
        const T* vr = vs + j * Dp;
#pragma unroll
        for (int i = 0; i < kAttnMaxDPL; ++i) {
          const int d = lane + 32 * i;
          if (d < D) acc[rr][i] = fmaf(pjj, to_f(vr[d]), acc[rr][i]);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int r = warp + rr * 8, R = row0 + r;
    if (R >= rows_total) continue;
    const int m = q0 + R / group, h = kvh * group + R % group;
    if (p.S == 1) {
      const float inv = 1.0f / lrun[rr];
#pragma unroll
      for (int i = 0; i < kAttnMaxDPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) p.out[int64_t(m) * p.NH * D + h * D + d] = of_f<T>(acc[rr][i] * inv);
      }
    } else {
      const int64_t idx = (int64_t(split) * p.M + m) * p.NH + h;
#pragma unroll
      for (int i = 0; i < kAttnMaxDPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) p.part_acc[idx * D + d] = acc[rr][i];
      }
      if (lane == 0) {
        p.part_ml[idx * 2] = mrun[rr];
        p.part_ml[idx * 2 + 1] = lrun[rr];
      }
    }
  }
}

// out[m, h, d] = sum_s acc_s * exp(m_s - M) / sum_s l_s * exp(m_s - M), M = max_s m_s. One block
// per (m, h), >= max(D, S) threads; the S weights are computed once into shared memory.
template <class T>
__global__ void attn_combine_kernel(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                                    int S, int MH, int D, T* out) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  __shared__ float ms[kAttnMaxSplits], wl[kAttnMaxSplits], mx_s;
  const int mh = blockIdx.x, t = threadIdx.x;
  if (t < S) {
    ms[t] = part_ml[(int64_t(t) * MH + mh) * 2];
    wl[t] = part_ml[(int64_t(t) * MH + mh) * 2 + 1];
  }
  __syncthreads();
  if (t == 0) {
    float mx = -INFINITY;
    for (int s = 0; s < S; ++s) mx = fmaxf(mx, ms[s]);
    mx_s = mx;
  }
  __syncthreads();
  if (t < S) ms[t] = ms[t] == -INFINITY ? 0.f : expf(ms[t] - mx_s);  // the split's weight
  __syncthreads();
  if (t >= D) return;
  float l = 0.f, a = 0.f;
#pragma unroll 8
  for (int s = 0; s < S; ++s) {
    const float w = ms[s];
    const float v = part_acc[(int64_t(s) * MH + mh) * D + t];  // loads independent: in flight together
    if (w != 0.f) {
      l += wl[s] * w;
      a += v * w;
    }
  }
  out[int64_t(mh) * D + t] = of_f<T>(a / l);
}

// ---- decode attention: one new query per sequence --------------------------------------------
// out[g, h, :] = sum_k softmax_k(s_k) V[k], s_k = scale * (q_h . K[k]) (+ slope_h * k), over the
// keys k of sequence g (k <= pos, and k > pos - window with a sliding window), for the `group`
// heads h sharing kv head kvh: the function attention_kernel computes for Mq = 1, organised for
// latency. Block (g, kvh, split) takes the keys [sb, se) of its split in steps of CG chunks of 32
// keys; chunk c's K and V rows go to shared memory (cp.async, 16-byte pieces, all in flight at
// once) and warp (c, h) -- one warp per chunk and head, so no warp runs a long serial chain --
// scores its chunk for head h (lane j: key j, float dot over D with q_h from shared memory), runs
// the online softmax and accumulates dims lane * DPL + i. The block then merges its chunk warps per
// head, writes (m, l, acc) partials, and the S split blocks of (g, kvh) count themselves on a
// ticket: the last merges the S partials and writes out (no combine kernel), then resets the
// ticket for the next launch. The step's own token is folded in as rope_kv_kernel would have done
// it: q is rotated as it is read (RoPE), and the split holding position pos writes the token's
// (rotated) k and its v to the cache before copying its keys. D % 8 == 0, D <= 32 * DPL,
// group * CG <= kDecMaxWarps.
constexpr int kDecKeys = 32, kDecMaxWarps = 16;
static_assert(kDecKeys == 32, "decode_attention_kernel: a chunk is one key per lane (and j >> 5 in its copies)");

template <class T>
struct DecodeAttnParams {
  const T* q;
  int64_t ldq;  // query g's q row at q + g * ldq; head h at + h * D
  T* K;  // the cache, written at the step's position
  T* V;
  T* out;              // [nq, NH * D]
  float* part_acc;     // [S, nq, NH, D]
  float* part_ml;      // [S, nq, NH, 2]
  unsigned* tickets;   // [nq * NKV], zero between launches
  QueryGroups qg;      // Mq = 1
  const float* slopes;  // ALiBi per head or null
  const float* inv_freq;  // RoPE of the first 2 * half dims of q and k (rope_kv_kernel's), or null
  float scale;
  int nq, NH, NKV, D, window, S, CG, half;
};

// x[d] of a q or k head after RoPE, rounded to T, with cs/sn[j] = float(cos/sin(double(float(pos)
// * inv_freq[j]))) for j < half: rope_kv_kernel's operations.
template <class T>
__device__ __forceinline__ float rope_at(const T* x, int d, int half, const float* cs, const float* sn) {
  if (d >= 2 * half) return to_f(x[d]);
  const int j = d < half ? d : d - half;
  const float x0 = to_f(x[j]), x1 = to_f(x[j + half]);
  return to_f(of_f<T>(d < half ? __fsub_rn(__fmul_rn(x0, cs[j]), __fmul_rn(x1, sn[j]))
                               : __fadd_rn(__fmul_rn(x1, cs[j]), __fmul_rn(x0, sn[j]))));
}

__host__ __device__ inline int dec_attn_pitch(int D) { return D + 8; }  // 16-byte rows, no bank conflicts
inline size_t dec_attn_tile_bytes(int D) { return size_t(2) * kDecKeys * dec_attn_pitch(D) * 2; }  // K + V
// Chunks in flight per block: as many as fit 16 warps (one per chunk and head) and ~96 KB of tiles.
inline int dec_attn_chunks(int D, int group) {
  const int by_warps = kDecMaxWarps / group, by_smem = int((96u << 10) / dec_attn_tile_bytes(D));
  return std::max(1, std::min(by_warps, by_smem));
}
inline size_t decode_attn_smem_bytes(int D, int group, int CG) {
  const size_t merge = size_t(CG) * group * (D + 2) * 4;
  return size_t(group) * D * 4 + std::max(size_t(CG) * dec_attn_tile_bytes(D), merge);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// DPL: dims per lane. Block: 32 * group * CG threads.
template <class T, int DPL>
__global__ void __launch_bounds__(kDecMaxWarps * 32) decode_attention_kernel(DecodeAttnParams<T> p) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  extern __shared__ float4 smem_f4[];
  float* qs = reinterpret_cast<float*>(smem_f4);
  const int D = p.D, group = p.NH / p.NKV, Dp = dec_attn_pitch(D), kvd = p.NKV * D, CG = p.CG;
  const int g = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int cg = warp / group, h = warp - cg * group;  // this warp's chunk slot and head
  float* region = qs + group * D;                      // CG K/V tiles, later the merge
  const int pos = p.qg.start[g];
  T* Kg = p.K + g * p.qg.seq_stride;
  T* Vg = p.V + g * p.qg.seq_stride;
  const int kbeg = p.window > 0 ? max(0, pos - p.window + 1) : 0, kend = pos + 1;
  int per = (kend - kbeg + p.S - 1) / p.S;
  per = (per + kDecKeys - 1) / kDecKeys * kDecKeys;
  const int sb = kbeg + split * per, se = min(kend, sb + per);
  const int D8 = D / 8, step = CG * kDecKeys;
  // All threads copy the step's CG chunks (K and V rows of up to CG * 32 keys): thread t always
  // moves 16-byte piece t % D8 of rows t / D8, + rows_per_pass, ... (D8 <= 32 <= blockDim; the
  // last blockDim % D8 threads idle) -- no divisions per copy.
  const int rows_per_pass = blockDim.x / D8, piece = (threadIdx.x % D8) * 8;
  const int first_row = threadIdx.x < rows_per_pass * D8 ? threadIdx.x / D8 : step;
  auto issue = [&](int k0) {
    const int nk = min(step, se - k0);
    for (int j = first_row; j < nk; j += rows_per_pass) {  // key k0 + j: chunk j / 32, row j % 32
      const int64_t off = int64_t(k0 + j) * kvd + kvh * D + piece;
      T* kt = reinterpret_cast<T*>(region) + (j >> 5) * (2 * kDecKeys * Dp) + (j & 31) * Dp;
      cp_async16(kt + piece, Kg + off);
      cp_async16(kt + kDecKeys * Dp + piece, Vg + off);
    }
  };
  const T* qrow = p.q + int64_t(g) * p.ldq;
  const bool holds_pos = sb <= pos && pos < se;  // this split holds the new token
  if (!holds_pos && sb < se) issue(sb);  // first: the copies depend on nothing below
  __shared__ float s_cos[128], s_sin[128];  // RoPE at pos, once per block (half <= 128)
  __shared__ float s_pw[kDecMaxWarps][32];  // each warp's row of P
  if (p.inv_freq)
    for (int j = threadIdx.x; j < p.half; j += blockDim.x) {
      double sd, cd;
      sincos(double(__fmul_rn(float(pos), p.inv_freq[j])), &sd, &cd);
      s_cos[j] = float(cd);
      s_sin[j] = float(sd);
    }
  // Up to here nothing read what the kernel before (the q/k/v projection) writes: the cache rows
  // before pos were written by earlier steps. Wait for it now.
  pdl_wait_primary();
  __syncthreads();
  if (holds_pos) {  // the token's (rotated) k and its v into the cache before its keys are copied
    const T* kx = qrow + p.NH * D + kvh * D;
    const T* vx = qrow + p.NH * D + kvd + kvh * D;
    T* kdst = Kg + int64_t(pos) * kvd + kvh * D;
    T* vdst = Vg + int64_t(pos) * kvd + kvh * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      kdst[d] = p.inv_freq ? of_f<T>(rope_at(kx, d, p.half, s_cos, s_sin)) : kx[d];
      vdst[d] = vx[d];
    }
    __syncthreads();  // (the copies below read these rows through L2)
    issue(sb);
  }
  for (int i = threadIdx.x; i < group * D; i += blockDim.x) {
    const T* x = qrow + (kvh * group + i / D) * D;
    qs[i] = p.inv_freq ? rope_at(x, i % D, p.half, s_cos, s_sin) : to_f(x[i % D]);
  }

  float m = -INFINITY, l = 0.f, acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.f;
  const float slope = p.slopes ? p.slopes[kvh * group + h] : 0.f;
  const T* kt = reinterpret_cast<const T*>(region) + size_t(cg) * 2 * kDecKeys * Dp;
  const T* vt = kt + kDecKeys * Dp;
  const float* qh = qs + h * D;
  for (int k0 = sb; k0 < se; k0 += step) {  // the same trip count in every warp (barriers)
    cp_async_wait_all();
    __syncthreads();
    const int c0 = k0 + cg * kDecKeys;
    if (cg < CG && c0 < se) {
      const int key = c0 + lane;
      const bool valid = key < se;
      float s = -INFINITY;
      if (valid) {
        const T* kr = kt + lane * Dp;
        s = dot_q_k8(qh, kr, D) * p.scale;
        if (p.slopes) s += slope * float(key);
      }
      const float mnew = fmaxf(m, warp_max(s));  // finite: key c0 is valid
      const float corr = expf(m - mnew);
      const float pj = valid ? expf(s - mnew) : 0.f;
      l = l * corr + warp_sum(pj);
      m = mnew;
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[i] *= corr;
      const int nk = min(kDecKeys, se - c0);
      struct alignas(2 * DPL) VecT {
        T v[DPL];
      };
      // The 32 weights through a per-warp shared row (broadcast reads): unlike shuffles, the loop
      // below can issue them and the V loads several keys ahead. Same products, same order.
      float* pw = s_pw[warp];
      pw[lane] = pj;
      __syncwarp();
      const int d0 = lane * DPL;  // this lane's DPL consecutive dims: one shared-memory load per key
      if (d0 < D) {
        const T* vp = vt + d0;
#pragma unroll 8
        for (int j = 0; j < nk; ++j, vp += Dp) {
          const float w = pw[j];
          const VecT vv = *reinterpret_cast<const VecT*>(vp);
#pragma unroll
          for (int i = 0; i < DPL; ++i) acc[i] = fmaf(w, to_f(vv.v[i]), acc[i]);
        }
      }
      __syncwarp();  // pw is read: the next chunk may rewrite it
    }
    __syncthreads();  // the tiles are read: the next step may overwrite them
    if (k0 + step < se) issue(k0 + step);
  }

  // Merge the chunk warps per head: M = max m_c, L = sum l_c e^(m_c - M), A = sum acc_c e^(m_c - M).
  float* wml = region;                    // [CG][group][2]
  float* wacc = region + CG * group * 2;  // [CG][group][D]
  if (cg < CG) {
    if (lane == 0) {
      wml[(cg * group + h) * 2] = m;
      wml[(cg * group + h) * 2 + 1] = l;
    }
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane * DPL + i;
      if (d < D) wacc[(cg * group + h) * D + d] = acc[i];
    }
  }
  __syncthreads();
  const int hd = group * D;  // this block's (head, dim) outputs
  for (int t = threadIdx.x; t < hd; t += blockDim.x) {
    const int hh = t / D, d = t - hh * D;
    float M = -INFINITY;
    for (int c = 0; c < CG; ++c) M = fmaxf(M, wml[(c * group + hh) * 2]);
    float L = 0.f, A = 0.f;
    for (int c = 0; c < CG; ++c) {
      const float mc = wml[(c * group + hh) * 2];
      if (mc == -INFINITY) continue;
      const float e = expf(mc - M);
      L += wml[(c * group + hh) * 2 + 1] * e;
      A += wacc[(c * group + hh) * D + d] * e;
    }
    const int head = kvh * group + hh;
    if (p.S == 1) {
      p.out[int64_t(g) * p.NH * D + head * D + d] = of_f<T>(A / L);
    } else {
      const int64_t idx = (int64_t(split) * p.nq + g) * p.NH + head;
      p.part_acc[idx * D + d] = A;
      if (d == 0) {
        p.part_ml[idx * 2] = M;
        p.part_ml[idx * 2 + 1] = L;
      }
    }
  }
  if (p.S == 1) return;

  // The last of the S split blocks of (g, kvh) merges their partials: the split weights
  // e^(m_s - M) and the sums L once per head in shared memory, then each output a sum over the
  // splits whose loads are independent (in flight together).
  __shared__ unsigned s_last;
  __shared__ float s_w[kAttnMaxSplits * kDecMaxWarps], s_lv[kAttnMaxSplits * kDecMaxWarps], s_l[kDecMaxWarps];
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* tk = p.tickets + g * p.NKV + kvh;
    const unsigned prev = atomicAdd(tk, 1u);
    s_last = prev == unsigned(p.S - 1);
    if (s_last) *tk = 0u;  // every split has counted: ready for the next launch
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const int64_t ml0 = int64_t(g) * p.NH + kvh * group;  // (split 0, g, first head of the group)
  for (int i = threadIdx.x; i < p.S * group; i += blockDim.x) {  // (m, l) of every split, at once
    const int sp = i / group, hh = i - sp * group;
    const float2 ml = __ldcg(reinterpret_cast<const float2*>(&p.part_ml[(int64_t(sp) * p.nq * p.NH + ml0 + hh) * 2]));
    s_w[i] = ml.x;
    s_lv[i] = ml.y;
  }
  __syncthreads();
  if (threadIdx.x < group) {  // from shared memory only: no serial global loads
    const int hh = threadIdx.x;
    float M = -INFINITY;
    for (int sp = 0; sp < p.S; ++sp) M = fmaxf(M, s_w[sp * group + hh]);
    float L = 0.f;
    for (int sp = 0; sp < p.S; ++sp) {
      const float ms = s_w[sp * group + hh];
      const float w = ms == -INFINITY ? 0.f : expf(ms - M);
      if (w != 0.f) L += s_lv[sp * group + hh] * w;
      s_w[sp * group + hh] = w;
    }
    s_l[hh] = L;
  }
  __syncthreads();
  for (int t = threadIdx.x; t < hd; t += blockDim.x) {
    const int hh = t / D, d = t - hh * D;
    float A = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < p.S; ++sp) {
      const float a = __ldcg(&p.part_acc[(int64_t(sp) * p.nq * p.NH + ml0 + hh) * D + d]);
      const float w = s_w[sp * group + hh];
      if (w != 0.f) A += a * w;
    }
    p.out[int64_t(g) * p.NH * D + (kvh * group + hh) * D + d] = of_f<T>(A / s_l[hh]);
  }
}

// Prefill attention, softmax of a chunk of scores S (ST: fp16 or float32, [rows][ldS], rows ordered
// (j, g, mi) = ((j * NKV + g) * Mc + mi) for head h = g * group + j and query position
// p0 + c0 + mi) into probabilities P (T, same layout): p = exp(v - max) / sum exp(v - max) over the
// keys allowed by the causal mask (and the sliding window), v = s * scale (+ slope[h] * key);
// masked keys get 0. One block per row.
template <class T, class ST>
__global__ void __launch_bounds__(256) softmax_rows_kernel(const ST* __restrict__ S, T* __restrict__ P,
                                                          int64_t ldS, int Tc, int Mc, int NKV, int group,
                                                          int qpos0, float scale, const float* __restrict__ slopes,
                                                          int window) {
  pdl_launch_dependents();  // the kernel after this one may be scheduled now (cuda/pdl.cuh)
  pdl_wait_primary();      // ... and this one waits here for the one before it
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int mi = int(r % Mc), jg = int(r / Mc), g = jg % NKV, j = jg / NKV;
  const int h = g * group + j, qpos = qpos0 + mi;
  const int k0 = window > 0 ? max(0, qpos - window + 1) : 0, k1 = min(Tc, qpos + 1);
  const float slope = slopes ? slopes[h] : 0.f;
  const ST* s = S + r * ldS;
  T* p = P + r * ldS;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  float mx = -INFINITY;
  for (int k = k0 + threadIdx.x; k < k1; k += blockDim.x) {
    float v = to_f(s[k]) * scale;
    if (slopes) v += slope * float(k);
    mx = fmaxf(mx, v);
  }
  mx = warp_max(mx);
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = warp_max(lane < nw ? red[lane] : -INFINITY);
  __syncthreads();
  float sum = 0.f;
  for (int k = k0 + threadIdx.x; k < k1; k += blockDim.x) {
    float v = to_f(s[k]) * scale;
    if (slopes) v += slope * float(k);
    sum += expf(v - mx);
  }
  sum = warp_sum(sum);
  if (lane == 0) red[warp] = sum;
  __syncthreads();
  sum = warp_sum(lane < nw ? red[lane] : 0.f);
  const float inv = 1.0f / sum;
  for (int k = threadIdx.x; k < Tc; k += blockDim.x) {
    float e = 0.f;
    if (k >= k0 && k < k1) {
      float v = to_f(s[k]) * scale;
      if (slopes) v += slope * float(k);
      e = expf(v - mx) * inv;
    }
    p[k] = of_f<T>(e);
  }
}

// Synthetic weights: uniform in [-a, a] from a hash of (seed, index) -- reproducible, no state.
template <class T>
__global__ void fill_uniform_kernel(T* w, int64_t n, uint64_t seed, float a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + uint64_t(i);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = float(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    w[i] = of_f<T>((2.0f * u - 1.0f) * a);
  }
}
__global__ void fill_f32_kernel(float* w, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    w[i] = v;
}

}  // namespace llmint8::cuda::mk

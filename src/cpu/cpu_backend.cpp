// The optimised CPU backend: blocking, threading and scratch management around the per-ISA
// kernels of kernels.h (AMX-INT8 + AVX-512 VNNI, else AVX-512 VNNI, else AVX2, else scalar,
// chosen at run time; LLMINT8_CPU_ISA pins a lower tier).
//
//  * quantize_rowwise: one fused pass per row (absmax + outlier marks, then quantization while
//    the row is in cache), rows in parallel with per-thread outlier masks OR-merged afterwards,
//    then the outlier columns are zeroed in every row.
//  * gemm: small M (decode, M < kPackedMinM) streams every weight byte exactly once, all M rows
//    per weight tile, parallel over N. Larger M (prefill), AVX-512 VNNI: 48-row x kKc weight
//    panels packed into VNNI order (L1-resident) under an 8 x 48 vpdpbusd register tile over all
//    M rows. With AMX (from M = kPackedMinMAmx): the activations are packed once into VNNI tiles
//    and TDPBSSD computes C^T tiles straight from the weight rows (see gemm_amx).
//  * int8_linear: quantize X (straight into the u8 GEMM operand), GEMM, and the dequantization +
//    outlier product + bias + dtype conversion fused into the GEMM epilogue, on each N chunk while
//    its int32 results are in cache. Nothing is cached per weight across calls. The outlier
//    columns' weights (kept fp16 columns or dequantized int8, ref::outlier_weight) are gathered
//    per chunk before the epilogue.
//
// Integer results and absmax/outlier masks are bit-identical to src/quant/reference.cpp; float
// results are too (the epilogue keeps the reference's operation order, outlier sums included).
// gemm_s8s8s32 is exact for every int8 input, -128 included, while the true result fits in int32
// (always for K < 131072; the quantizer never emits -128, so K < 133,000 as the contract says).
//
// Work is handed out dynamically (panels, N chunks, rows): on a shared machine a descheduled
// thread then delays a call by its current item only, not by its whole static share.
//
// Thread safety: a CpuBackend reuses its scratch buffers across calls, so one backend object may
// be used by one caller at a time (make one backend per calling thread otherwise).
#include "cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/kernels.h"
#include "quant/host_backend.h"
#include "quant/reference.h"

namespace llmint8 {
namespace cpu {
namespace {

// Below these M the decode path (no packing, each weight byte streamed once) is faster than the
// prefill paths; measured crossovers on a Sapphire Rapids-class core at K = N = 4096.
constexpr int64_t kPackedMinM = 6;     // AVX-512 VNNI packed panels
constexpr int64_t kPackedMinMAmx = 4;  // AMX tiles
constexpr int64_t kKc = 512;           // K block of a packed panel: 48 x 512 B = 24 KiB, in L1
constexpr int64_t kDotChunk = 64;      // N columns per decode work item / epilogue call

// A growable 64-byte aligned scratch buffer.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : p_(o.p_), cap_(o.cap_) { o.p_ = nullptr; o.cap_ = 0; }
  ~Scratch() { std::free(p_); }
  template <class T>
  T* get(size_t n) {
    const size_t bytes = std::max<size_t>(n * sizeof(T), 64);
    if (bytes > cap_) {
      std::free(p_);
      cap_ = (bytes + 63) / 64 * 64;
      p_ = std::aligned_alloc(64, cap_);
      if (!p_) { cap_ = 0; throw Error("cpu backend: out of memory for " + std::to_string(bytes) + " bytes of scratch"); }
    }
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

struct ThreadScratch {
  Scratch c, panel, corr, wdq;
};

// Where GEMM results go: int32 C [M,N], or the dequantization epilogue of dtype yt.
struct Output {
  int32_t* C = nullptr;
  EpilogueFn epi = nullptr;
  EpiArgs args;
  DType yt = DType::F32;
  const Int8Weight* W = nullptr;  // the weight, for the outlier columns
  const int64_t* cols = nullptr;   // [nc] outlier column indices
  const int64_t* slots = nullptr;  // [nc] their kept-column slots (-1: not kept)
};

template <class T>
void fill_wdq(const Output& o, int64_t n0, int64_t nw, float* wdq) {
  for (int64_t t = 0; t < o.args.nc; ++t)
    for (int64_t j = 0; j < nw; ++j) {
      const int64_t n = n0 + j;
      wdq[t * nw + j] = ref::outlier_weight<T>(*o.W, n, o.cols[t], o.slots[t]);
    }
}

// Delivers rows [0, M) x columns [n0, n0+nw) of a finished int32 block c (row stride ldc).
void finish(const Output& o, int64_t M, int64_t n0, int64_t nw, const int32_t* c, int64_t ldc,
            Scratch& wbuf) {
  if (o.C) {
    for (int64_t m = 0; m < M; ++m)
      std::memcpy(o.C + m * o.args.ldy + n0, c + m * ldc, size_t(nw) * sizeof(int32_t));
    return;
  }
  float* wdq = nullptr;
  if (o.args.nc) {
    wdq = wbuf.get<float>(size_t(o.args.nc * nw));
    switch (o.yt) {
      case DType::F16: fill_wdq<f16>(o, n0, nw, wdq); break;
      case DType::BF16: fill_wdq<bf16>(o, n0, nw, wdq); break;
      default: fill_wdq<float>(o, n0, nw, wdq); break;
    }
  }
  o.epi(o.args, 0, M, n0, nw, c, ldc, wdq);
}

class CpuBackend final : public HostBackend {
 public:
  CpuBackend(int threads, Isa isa)
      : threads_(threads > 0 ? threads : omp_get_max_threads()),
        kern_(isa == Isa::Amx ? amx_kernels()
              : isa == Isa::Avx512Vnni ? avx512_kernels()
              : isa == Isa::Avx2 ? avx2_kernels() : scalar_kernels()),
        thr_(size_t(threads_)) {}

  std::string name() const override { return std::string("cpu-") + isa_name(kern_.isa); }

  void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                    int32_t* C) override {
    check_dims("gemm_s8s8s32", M, N, K);
    if (M == 0 || N == 0) return;
    if (!A || !B || !C) throw Error("gemm_s8s8s32: null matrix pointer");
    const int64_t lda = round_up(K, 64);
    uint8_t* au = a_operand(M, lda);
    const int nt = work_threads(M * K, M);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* a = A + m * K;
      uint8_t* d = au + m * lda;
      for (int64_t k = 0; k < K; ++k) d[k] = uint8_t(a[k]) ^ 0x80u;
      std::memset(d + K, 0x80, size_t(lda - K));
    }
    Output o;
    o.C = C;
    o.args.ldy = N;
    gemm(M, N, K, au, lda, B, o);
  }

 protected:
#define LLMINT8_CPU_HOOKS(T)                                                                      \
  void quantize_rowwise_t(const T* X, int64_t M, int64_t K, float th, int8_t* Q, float* amax,    \
                          uint8_t* oc) override {                                                 \
    check_dims("quantize_rowwise", M, 1, K);                                                      \
    if (M == 0 && oc) std::memset(oc, 0, size_t(K));                                              \
    if (M == 0) return;                                                                           \
    quantize(dtype_of<T>(), X, M, K, th, reinterpret_cast<uint8_t*>(Q), K, 0, amax, oc);         \
  }                                                                                               \
  void dequantize_t(int64_t M, int64_t N, const int32_t* C, const float* ax, const float* aw,     \
                    const float* bias, T* Y) override {                                           \
    dequantize_impl(dtype_of<T>(), M, N, C, ax, aw, bias, Y);                                     \
  }                                                                                               \
  void int8_linear_t(const Int8Weight& W, const T* X, int64_t M, float th, const float* bias,     \
                     T* Y) override {                                                             \
    linear(W, X, M, th, bias, Y);                                                                 \
  }
  LLMINT8_CPU_HOOKS(float)
  LLMINT8_CPU_HOOKS(f16)
  LLMINT8_CPU_HOOKS(bf16)
#undef LLMINT8_CPU_HOOKS

 private:
  static int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }
  // Grows the per-thread buffers of threads [0, nt) before a parallel region: an exception (out
  // of memory) must not be thrown inside one, where it would terminate the program.
  void reserve(int nt, int64_t c_ints, int64_t panel, int64_t corr_ints, int64_t wdq_floats) {
    for (int t = 0; t < nt; ++t) {
      ThreadScratch& ts = thr_[size_t(t)];
      ts.c.get<int32_t>(size_t(c_ints));
      ts.panel.get<int8_t>(size_t(panel));
      ts.corr.get<int32_t>(size_t(corr_ints));
      ts.wdq.get<float>(size_t(wdq_floats));
    }
  }

  // The u8 GEMM operand buffer [M, lda].
  uint8_t* a_operand(int64_t M, int64_t lda) { return a_u8_.get<uint8_t>(size_t(M * lda)); }
  static void check_dims(const char* what, int64_t M, int64_t N, int64_t K) {
    if (M < 0 || N < 0 || K < 0)
      throw Error(std::string(what) + ": negative dimension (M=" + std::to_string(M) +
                  ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ")");
  }
  // Threads worth waking for `work` element-operations split over `items` independent items.
  int work_threads(int64_t work, int64_t items) const {
    if (work < (int64_t(1) << 15)) return 1;
    return int(std::max<int64_t>(1, std::min<int64_t>(threads_, items)));
  }

  // Rows of X (dtype t) -> q (row stride ldq, bytes = int8 XOR qxor), absmax, outlier mask.
  void quantize(DType t, const void* X, int64_t M, int64_t K, float threshold, uint8_t* q,
                int64_t ldq, uint8_t qxor, float* absmax, uint8_t* outlier_cols) {
    if (!X || !q || !absmax) throw Error("quantize_rowwise: null input or output pointer");
    const QuantRowFn qr = kern_.quant_row[dtype_index(t)];
    const size_t es = dtype_size(t);
    const char* xb = static_cast<const char*>(X);
    const bool marks = threshold > 0.f && outlier_cols;
    if (outlier_cols) std::memset(outlier_cols, 0, size_t(K));
    // ~0.3 ns per value on one core: below ~256K values waking a second thread costs more.
    const int nt = M * K < (int64_t(1) << 18) ? 1 : work_threads(M * K, M);
    if (nt == 1) {
      for (int64_t m = 0; m < M; ++m)
        absmax[m] = qr(xb + size_t(m * K) * es, K, threshold, q + m * ldq, qxor,
                       marks ? outlier_cols : nullptr);
    } else {
      uint8_t* tm = marks ? masks_.get<uint8_t>(size_t(nt * K)) : nullptr;
#pragma omp parallel num_threads(nt)
      {
        uint8_t* mine = marks ? tm + omp_get_thread_num() * K : nullptr;
        if (mine) std::memset(mine, 0, size_t(K));
#pragma omp for schedule(dynamic, 4)
        for (int64_t m = 0; m < M; ++m)
          absmax[m] = qr(xb + size_t(m * K) * es, K, threshold, q + m * ldq, qxor, mine);
        if (marks) {
#pragma omp for schedule(static)
          for (int64_t k = 0; k < K; ++k) {
            uint8_t v = 0;
            for (int i = 0; i < nt; ++i) v |= tm[i * K + k];
            outlier_cols[k] = v;
          }
        }
      }
    }
    if (marks) {
      cols_ = ref::outlier_indices(outlier_cols, K);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c : cols_) q[m * ldq + c] = qxor;
    } else {
      cols_.clear();
    }
  }

  void dequantize_impl(DType t, int64_t M, int64_t N, const int32_t* C, const float* ax,
                       const float* aw, const float* bias, void* Y) {
    check_dims("dequantize", M, N, 1);
    if (M == 0 || N == 0) return;
    if (!C || !ax || !aw || !Y) throw Error("dequantize: null input or output pointer");
    EpiArgs e;
    e.ax = ax;
    e.aw = aw;
    e.bias = bias;
    e.Y = Y;
    e.ldy = N;
    const EpilogueFn epi = kern_.epilogue[dtype_index(t)];
    const int nt = work_threads(M * N, M);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < M; ++m) epi(e, m, 1, 0, N, C + m * N, N, nullptr);
  }

  template <class T>
  void linear(const Int8Weight& W, const T* X, int64_t M, float threshold, const float* bias, T* Y) {
    const int64_t K = W.in_features, N = W.out_features;
    check_dims("int8_linear", M, N, K);
    if (M == 0 || N == 0) return;
    if (!X || !Y || (K > 0 && !W.CB) || !W.SCB) throw Error("int8_linear: null weight, input or output pointer");
    if (W.n_kept < 0 || (W.n_kept > 0 && (!W.kept_cols || !W.kept_w)))
      throw Error("int8_linear: kept columns without their indices or weights");
    const int64_t lda = round_up(K, 64);
    uint8_t* au = a_operand(M, lda);
    float* ax = absmax_.get<float>(size_t(M));
    uint8_t* mask = threshold > 0.f ? mask_.get<uint8_t>(size_t(K)) : nullptr;
    quantize(dtype_of<T>(), X, M, K, threshold, au, lda, 0x80, ax, mask);
    for (int64_t m = 0; m < M; ++m) std::memset(au + m * lda + K, 0x80, size_t(lda - K));
    const int64_t nc = int64_t(cols_.size());
    float* xo = nullptr;
    slots_.clear();
    if (nc) {
      slots_ = ref::kept_slots(W, cols_);
      xo = xo_.get<float>(size_t(M * nc));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t t = 0; t < nc; ++t) xo[m * nc + t] = to_float(X[m * K + cols_[size_t(t)]]);
    }
    Output o;
    o.epi = kern_.epilogue[dtype_index(dtype_of<T>())];
    o.args.ax = ax;
    o.args.aw = W.SCB;
    o.args.bias = bias;
    o.args.Y = Y;
    o.args.ldy = N;
    o.args.nc = nc;
    o.args.xo = xo;
    o.yt = dtype_of<T>();
    o.W = &W;
    o.cols = cols_.data();
    o.slots = slots_.data();
    gemm(M, N, K, au, lda, W.CB, o);
  }

  // C = (A - 128) B^T over A u8 [M, lda >= round_up(K, 64)], B int8 [N, K], delivered to `o`.
  void gemm(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B,
            const Output& o) {
    if (kern_.amx_block && M >= kPackedMinMAmx && K > 0)
      gemm_amx(M, N, K, A, lda, B, o);
    else if (kern_.pack_panel && M >= kPackedMinM && K > 0)
      gemm_packed(M, N, K, A, lda, B, o);
    else
      gemm_dot(M, N, K, A, lda, B, o);
  }

  void gemm_dot(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B,
                const Output& o) {
    const int64_t nchunks = (N + kDotChunk - 1) / kDotChunk;
    const int nt = work_threads(M * N * std::max<int64_t>(K, 1), nchunks);
    const int dmt = kern_.dot_mt, dnt = kern_.dot_nt;
    reserve(nt, M * kDotChunk, 0, 0, o.args.nc * kDotChunk);
#pragma omp parallel num_threads(nt)
    {
      ThreadScratch& ts = thr_[size_t(omp_get_thread_num())];
      int32_t* c = ts.c.get<int32_t>(size_t(M * kDotChunk));
#pragma omp for schedule(dynamic)
      for (int64_t ch = 0; ch < nchunks; ++ch) {
        const int64_t n0 = ch * kDotChunk, nw = std::min(kDotChunk, N - n0);
        for (int64_t jn = 0; jn < nw; jn += dnt) {
          const int ntile = int(std::min<int64_t>(dnt, nw - jn));
          const int8_t* bp[8];
          for (int j = 0; j < ntile; ++j) bp[j] = B + (n0 + jn + j) * K;
          for (int64_t m = 0; m < M; m += dmt)
            kern_.dot_tile(A + m * lda, lda, int(std::min<int64_t>(dmt, M - m)), bp, ntile, K,
                           c + m * kDotChunk + jn, kDotChunk);
        }
        finish(o, M, n0, nw, c, kDotChunk, ts.wdq);
      }
    }
  }

  void gemm_packed(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                   const int8_t* B, const Output& o) {
    const int64_t npanels = (N + kPanelN - 1) / kPanelN;
    const int nt = work_threads(M * N * K, npanels);
    reserve(nt, M * kPanelN, panel_bytes(kKc), kPanelN, o.args.nc * kPanelN);
#pragma omp parallel num_threads(nt)
    {
      ThreadScratch& ts = thr_[size_t(omp_get_thread_num())];
      int32_t* cacc = ts.c.get<int32_t>(size_t(M * kPanelN));
      int8_t* panel = ts.panel.get<int8_t>(size_t(panel_bytes(kKc)));
      int32_t* corr = ts.corr.get<int32_t>(kPanelN);
#pragma omp for schedule(dynamic)
      for (int64_t p = 0; p < npanels; ++p) {
        const int64_t n0 = p * kPanelN;
        const int nr = int(std::min<int64_t>(kPanelN, N - n0));
        for (int64_t k0 = 0; k0 < K; k0 += kKc) {
          const int64_t kc = std::min(kKc, K - k0);
          kern_.pack_panel(B + n0 * K, K, nr, k0, kc, panel, corr);
          for (int64_t m = 0; m < M; m += kMicroM)
            kern_.micro(A + m * lda, lda, int(std::min<int64_t>(kMicroM, M - m)), k0, kc, panel,
                        corr, cacc + m * kPanelN, k0 == 0);
        }
        finish(o, M, n0, nr, cacc, kPanelN, ts.wdq);
      }
    }
  }

  // AMX: C^T tiles of 32 weight rows x 16-row chunks of packed activations. Work items are
  // super-blocks of `sb` weight rows (<= ~1 MiB, kept in L2 while every activation chunk pair
  // passes over them), parallel; each item's int32 results are transposed into `cacc` and
  // delivered while in cache. With one chunk pair (M <= 32) interior blocks read the weight rows
  // in place, 64 bytes at a time past K (the packed activations are zero there); otherwise, and
  // for blocks at the end of B, the rows are first copied into tile order (zero-padded), which
  // turns 32 rows 4 KiB apart into sequential tile loads.
  void gemm_amx(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B,
                const Output& o) {
    const int64_t kp = lda, steps = kp / 64, nmc = (M + kAmxM - 1) / kAmxM;
    const int64_t sb = std::clamp<int64_t>((int64_t(1) << 20) / kp / kAmxN * kAmxN, kAmxN, 4 * kAmxN);
    const int64_t nitems = (N + sb - 1) / sb;
    int8_t* xp = xpack_.get<int8_t>(size_t(nmc * kAmxM * kp));
    const int nt = work_threads(M * N * K, nitems);
    reserve(nt, M * sb, sb * kp, 4 * 256, o.args.nc * sb);
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < nmc; ++c)
        kern_.amx_pack_act(A + c * kAmxM * lda, lda, int(std::min<int64_t>(kAmxM, M - c * kAmxM)),
                           kp, xp + c * kAmxM * kp);
      ThreadScratch& ts = thr_[size_t(omp_get_thread_num())];
      int32_t* cacc = ts.c.get<int32_t>(size_t(M * sb));
      int32_t* ct = ts.corr.get<int32_t>(4 * 256);
      kern_.tile_begin();
#pragma omp for schedule(dynamic)
      for (int64_t it = 0; it < nitems; ++it) {
        const int64_t n0 = it * sb, nw = std::min(sb, N - n0), nblk = (nw + kAmxN - 1) / kAmxN;
        const bool in_place = nmc <= 2 && n0 + nblk * kAmxN <= N &&
                              (n0 + nblk * kAmxN - 1) * K + kp <= N * K;
        const int8_t* w = B + n0 * K;
        if (!in_place) {
          int8_t* pw = ts.panel.get<int8_t>(size_t(nblk * steps * 2048));
          kern_.amx_pack_w(B + n0 * K, K, K, nw, kp, nblk, pw);
          w = pw;
        }
        for (int64_t c = 0; c < nmc; c += 2) {
          const bool two = c + 1 < nmc;
          const int mrows[2] = {int(std::min<int64_t>(kAmxM, M - c * kAmxM)),
                                two ? int(std::min<int64_t>(kAmxM, M - (c + 1) * kAmxM)) : 0};
          for (int64_t b = 0; b < nblk; ++b) {
            if (in_place)
              kern_.amx_block(w + b * kAmxN * K, K, 64, xp + c * kAmxM * kp,
                              two ? xp + (c + 1) * kAmxM * kp : nullptr, steps, ct);
            else
              kern_.amx_block(w + b * steps * 2048, 64, 2048, xp + c * kAmxM * kp,
                              two ? xp + (c + 1) * kAmxM * kp : nullptr, steps, ct);
            kern_.amx_unpack(ct, two ? 2 : 1, mrows, cacc + c * kAmxM * sb + b * kAmxN, sb);
          }
        }
        finish(o, M, n0, nw, cacc, sb, ts.wdq);
      }
      kern_.tile_end();
    }
  }

  int threads_;
  Kernels kern_;
  std::vector<ThreadScratch> thr_;
  Scratch a_u8_, absmax_, mask_, masks_, xo_, xpack_;
  std::vector<int64_t> cols_, slots_;
};

}  // namespace

bool isa_supported(Isa isa) { return int(isa) <= int(detect_isa()); }

std::unique_ptr<Backend> make_cpu_backend_isa(int threads, Isa isa) {
  if (!isa_supported(isa))
    throw Error(std::string("cpu backend: this CPU does not support the ") + isa_name(isa) + " kernels");
  return std::make_unique<CpuBackend>(threads, isa);
}

}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  // LLMINT8_CPU_ISA=scalar|avx2|avx512vnni|amx pins a lower tier (benchmarks, debugging).
  if (const char* want = std::getenv("LLMINT8_CPU_ISA"); want && *want) {
    for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx2, cpu::Isa::Avx512Vnni, cpu::Isa::Amx})
      if (std::string(want) == cpu::isa_name(isa)) return cpu::make_cpu_backend_isa(threads, isa);
    throw Error(std::string("LLMINT8_CPU_ISA: unknown kernel tier '") + want +
                "' (expected scalar, avx2, avx512vnni or amx)");
  }
  return std::make_unique<cpu::CpuBackend>(threads, cpu::detect_isa());
}

}  // namespace llmint8

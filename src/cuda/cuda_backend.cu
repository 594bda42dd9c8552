// The CUDA backend: device memory, one stream, the LLM.int8() primitives as kernels
// (src/cuda/kernels.cuh) plus cuBLASLt's int8 tensor-core GEMM (IMMA, exact int32).
//
// int8_linear has two paths, chosen per call from the shape:
//  * decode (M <= 16, K % 16 == 0, 16-byte aligned X and CB): quantize_rows_kernel quantizes the
//    rows and lists the outlier columns, then ONE fused kernel masks the outlier columns, streams
//    the int8 weights once and applies dequant + bias + outliers: for M = 1 (and K up to ~40K)
//    gemv_rows_kernel alone (quantizes X itself in every block, then a warp per weight row,
//    dp4a), else gemv_int8_fused_kernel (m16n8k32 MMAs, split K);
//  * otherwise: quantize (one pass) -> zero outlier columns + gather their 16-bit weights ->
//    cuBLASLt int8 GEMM (or the fallback kernel) -> one dequant/outlier/bias pass.
// Neither path syncs with the host nor allocates once the scratch buffers have grown to the
// largest shape seen (the first call of a shape), so a call can be captured into a CUDA graph.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/kernels.cuh"
#include "llmint8/backend.h"
#include "llmint8/error.h"

namespace llmint8 {
namespace {

using cuda::from_f;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(std::string("CUDA backend: ") + what + ": " + cudaGetErrorString(e));
}
void check_launch(const char* what) { check(cudaGetLastError(), what); }
void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("CUDA backend: ") + what + " failed with cuBLAS status " +
                std::to_string(int(s)));
}

int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

constexpr size_t kLtWorkspace = 64ull << 20;
constexpr int kStashBytes = 64 * 1024;  // row stash of quantize_rows_kernel
constexpr int kWgCap = 128;             // outlier columns whose 16-bit weights are pre-gathered

// A device buffer that only grows; growing is the only place that may sync or allocate.
struct Scratch {
  void* p = nullptr;
  size_t cap = 0;
  template <class T> T* get() const { return static_cast<T*>(p); }
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    sm_count_ = prop.multiProcessorCount;
    pdl_ = prop.major >= 9;  // programmatic dependent launch
    // Tuning override for measurements: the decode GEMV's K split (0 = the cost model).
    if (const char* e = std::getenv("LLMINT8_CUDA_DECODE_SPLIT")) decode_split_ = std::atoi(e);
    // Tuning override for measurements: LLMINT8_CUDA_NO_PDL=1 launches the decode GEMV plainly.
    if (const char* e = std::getenv("LLMINT8_CUDA_NO_PDL")) pdl_ = pdl_ && std::atoi(e) == 0;
    // Tuning override for measurements: LLMINT8_CUDA_DECODE_ROWS=R sends M <= R (at most 8) to the
    // row GEMV, the rest of M <= 16 to the split-K MMA GEMV (0: all of them; default 1).
    if (const char* e = std::getenv("LLMINT8_CUDA_DECODE_ROWS")) decode_rows_max_ = std::clamp(std::atoi(e), 0, 8);
    name_ = std::string("cuda:") + std::to_string(device_) + " (" + prop.name + ")";
    check_lt(cublasLtCreate(&lt_), "cublasLtCreate");
    check(cudaMalloc(&lt_ws_, kLtWorkspace), "cudaMalloc(cuBLASLt workspace)");
    set_smem_limits<float>();
    set_smem_limits<__half>();
    set_smem_limits<__nv_bfloat16>();
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    for (Scratch* s : {&mask_, &list_, &count_, &ticket_, &absmax_, &q_, &c_, &wg_, &cacc_, &tickets_})
      if (s->p) cudaFree(s->p);
    if (lt_ws_) cudaFree(lt_ws_);
    for (auto& kv : plans_) release_plan(kv.second);
    if (lt_) cublasLtDestroy(lt_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return name_; }
  bool is_host() const override { return false; }
  cudaStream_t stream() const { return stream_; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<size_t>(bytes, 1)), "cudaMalloc");
    return p;
  }
  void release(void* p) override {
    if (!p) return;
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    check(cudaFree(p), "cudaFree");
  }
  void to_device(void* dst, const void* src, size_t n) override {
    if (n == 0) return;
    check(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_), "cudaMemcpy to device");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  void to_host(void* dst, const void* src, size_t n) override {
    if (n == 0) return;
    check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_), "cudaMemcpy to host");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  // ---- quantize_rowwise ------------------------------------------------------------------------
  void quantize_rowwise(DType t, const void* X, int64_t M, int64_t K, float threshold, int8_t* Q,
                        float* absmax, uint8_t* outlier_cols) override {
    check_dims("quantize_rowwise", M, K, 1);
    if (M == 0) {
      if (outlier_cols && K > 0)
        check(cudaMemsetAsync(outlier_cols, 0, size_t(K), stream_), "cudaMemsetAsync");
      return;
    }
    if (!X || !Q || !absmax) throw Error("quantize_rowwise: null X, Q or absmax");
    switch (t) {
      case DType::F32: return quantize_t<float>(static_cast<const float*>(X), M, K, threshold, Q, absmax, outlier_cols);
      case DType::F16: return quantize_t<__half>(static_cast<const __half*>(X), M, K, threshold, Q, absmax, outlier_cols);
      case DType::BF16: return quantize_t<__nv_bfloat16>(static_cast<const __nv_bfloat16*>(X), M, K, threshold, Q, absmax, outlier_cols);
      default: throw Error("quantize_rowwise: input must be F32, F16 or BF16");
    }
  }

  // ---- gemm_s8s8s32 ----------------------------------------------------------------------------
  void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                    int32_t* C) override {
    check_dims("gemm_s8s8s32", M, N, K);
    if (M == 0 || N == 0) return;
    if (!C || (K > 0 && (!A || !B))) throw Error("gemm_s8s8s32: null A, B or C");
    gemm(M, N, K, A, B, C);
  }

  // ---- dequantize ------------------------------------------------------------------------------
  void dequantize(int64_t M, int64_t N, const int32_t* C, const float* ax, const float* aw,
                  const float* bias, DType t, void* Y) override {
    check_dims("dequantize", M, N, 1);
    if (M == 0 || N == 0) return;
    if (!C || !ax || !aw || !Y) throw Error("dequantize: null C, absmax_x, absmax_w or Y");
    switch (t) {
      case DType::F32: return dequant_t<float, false>(M, N, C, ax, aw, bias, static_cast<float*>(Y), nullptr, 0, nullptr);
      case DType::F16: return dequant_t<__half, false>(M, N, C, ax, aw, bias, static_cast<__half*>(Y), nullptr, 0, nullptr);
      case DType::BF16: return dequant_t<__nv_bfloat16, false>(M, N, C, ax, aw, bias, static_cast<__nv_bfloat16*>(Y), nullptr, 0, nullptr);
      default: throw Error("dequantize: output must be F32, F16 or BF16");
    }
  }

  // ---- int8_linear -----------------------------------------------------------------------------
  void int8_linear(const Int8Weight& W, DType t, const void* X, int64_t M, float threshold,
                   const float* bias, void* Y) override {
    check_dims("int8_linear", M, W.out_features, W.in_features);
    if (M == 0 || W.out_features == 0) return;
    if (!X || !Y || !W.SCB || (!W.CB && W.in_features > 0))
      throw Error("int8_linear: null X, Y, weight CB or SCB");
    if (W.n_kept != 0) throw Error("--keep-outlier-columns is not supported on cuda yet; use --device cpu");
    switch (t) {
      case DType::F32: return linear_t<float>(W, static_cast<const float*>(X), M, threshold, bias, static_cast<float*>(Y));
      case DType::F16: return linear_t<__half>(W, static_cast<const __half*>(X), M, threshold, bias, static_cast<__half*>(Y));
      case DType::BF16: return linear_t<__nv_bfloat16>(W, static_cast<const __nv_bfloat16*>(X), M, threshold, bias, static_cast<__nv_bfloat16*>(Y));
      default: throw Error("int8_linear: activations must be F32, F16 or BF16");
    }
  }

 private:
  struct Plan {
    bool use_lt = false;
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using PlanKey = std::tuple<int64_t, int64_t, int64_t, int, int, int>;

  static void check_dims(const char* what, int64_t a, int64_t b, int64_t c) {
    if (a < 0 || b < 0 || c < 0)
      throw Error(std::string(what) + ": negative dimension (" + std::to_string(a) + ", " +
                  std::to_string(b) + ", " + std::to_string(c) + ")");
    if (a > INT32_MAX || b > INT32_MAX || c > INT32_MAX)
      throw Error(std::string(what) + ": dimension over 2^31");
  }

  template <class T> void set_smem_limits() {
    check(cudaFuncSetAttribute((const void*)cuda::quantize_rows_kernel<T, true>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, kStashBytes),
          "cudaFuncSetAttribute");
  }

  bool capturing() const {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream_, &st), "cudaStreamIsCapturing");
    return st != cudaStreamCaptureStatusNone;
  }

  // Grows `s` to at least `bytes` (zero-filled); never while the stream is being captured.
  void ensure(Scratch& s, size_t bytes) {
    bytes = std::max<size_t>(bytes, 16);
    if (s.cap >= bytes) return;
    if (capturing())
      throw Error("CUDA backend: scratch must grow during graph capture; run the call once "
                  "outside capture first");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    if (s.p) check(cudaFree(s.p), "cudaFree");
    s.p = nullptr;
    s.cap = 0;
    const size_t cap = (bytes + 255) / 256 * 256;
    check(cudaMalloc(&s.p, cap), "cudaMalloc(scratch)");
    // Zero-filled on this stream (a plain cudaMemset runs on the legacy stream, which a
    // non-blocking stream does not wait for) and finished before the first use.
    check(cudaMemsetAsync(s.p, 0, cap, stream_), "cudaMemsetAsync(scratch)");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    s.cap = cap;
  }

  // Quantizes X into Q/absmax and leaves the ascending outlier list in list_/count_.
  template <class T>
  void quantize_t(const T* X, int64_t M, int64_t K, float threshold, int8_t* Q, float* absmax,
                  uint8_t* user_mask, const int8_t* CB = nullptr,
                  const float* SCB = nullptr, int64_t N = 0, bool zero_cols = true) {
    ensure(mask_, size_t((K + 15) / 16 * 16));
    ensure(list_, size_t(std::max<int64_t>(K, 1)) * 4);
    ensure(count_, 4);
    ensure(ticket_, 4);
    const bool vec = K > 0 && reinterpret_cast<uintptr_t>(X) % 16 == 0 &&
                     (K * int64_t(sizeof(T))) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(Q) % 8 == 0;
    const int64_t row_bytes = K * int64_t(sizeof(T));
    const int stash = (vec && row_bytes <= kStashBytes) ? int(row_bytes) : 0;
    // Few rows (decode): 1024 threads, the whole row in one round of loads. Many rows: about 4
    // 16-byte loads per thread (short rows: small blocks, many rows in flight per SM; long rows:
    // 256 threads; 1024 was slower for 57 KB rows: 317 vs ~255 us at M = 4096, K = 28672).
    const int64_t nvec = vec ? row_bytes / 16 : K;
    const int threads = M <= 64
                            ? 1024
                            : int(std::clamp<int64_t>((nvec / 4 + 31) / 32 * 32, 128, 256));
    // One row per block: measured faster than several rows per block (H100: 41 vs 48 us at
    // M = K = 4096), the per-block fence and ticket atomic are not the limit.
    const int rows_per_block = 1;
    const dim3 grid{unsigned((M + rows_per_block - 1) / rows_per_block)};
    auto* mask = mask_.get<uint8_t>();
    auto* list = list_.get<int>();
    auto* count = count_.get<int>();
    auto* ticket = ticket_.get<unsigned>();
    if (vec)
      cuda::quantize_rows_kernel<T, true><<<grid, threads, stash, stream_>>>(
          X, K, threshold, Q, absmax, mask, list, count, ticket, user_mask, stash, M, rows_per_block);
    else
      cuda::quantize_rows_kernel<T, false><<<grid, threads, stash, stream_>>>(
          X, K, threshold, Q, absmax, mask, list, count, ticket, user_mask, stash, M, rows_per_block);
    check_launch("quantize_rows_kernel");
    if (zero_cols && threshold > 0.f && K > 0) zero_columns<T>(Q, M, K, CB, SCB, N);
  }

  // Zeroes Q's outlier columns; with CB given, also gathers their dequantized 16-bit weights.
  template <class T>
  void zero_columns(int8_t* Q, int64_t M, int64_t K, const int8_t* CB, const float* SCB,
                    int64_t N) {
    const int row_blocks = int((M + 255) / 256);
    int gather_blocks = 0;
    if (CB && N > 0) {
      ensure(wg_, size_t(kWgCap) * size_t(N) * 4);
      gather_blocks = int(std::min<int64_t>((int64_t(kWgCap) * N + 255) / 256, 4 * sm_count_));
    }
    cuda::zero_outlier_columns_kernel<T><<<row_blocks + gather_blocks, 256, 0, stream_>>>(
        Q, M, K, list_.get<int>(), count_.get<int>(), row_blocks, CB, SCB, N, wg_.get<float>(),
        kWgCap);
    check_launch("zero_outlier_columns_kernel");
  }

  template <class T, bool OUTL>
  void dequant_t(int64_t M, int64_t N, const int32_t* C, const float* ax, const float* aw,
                 const float* bias, T* Y, const T* X, int64_t K, const int8_t* CB) {
    const dim3 grid(unsigned((N + 255) / 256), unsigned((M + 7) / 8));
    if (grid.y > 65535) throw Error("dequantize: M too large");
    const bool vec = N % 8 == 0 && reinterpret_cast<uintptr_t>(C) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(Y) % 16 == 0;
    const int* list = OUTL ? list_.get<int>() : nullptr;
    const int* count = OUTL ? count_.get<int>() : nullptr;
    const float* wg = OUTL ? wg_.get<float>() : nullptr;
    if (vec)
      cuda::dequantize_kernel<T, OUTL, true><<<grid, 256, 0, stream_>>>(M, N, C, ax, aw, bias, Y, X, K, list, count, wg, kWgCap, CB);
    else
      cuda::dequantize_kernel<T, OUTL, false><<<grid, 256, 0, stream_>>>(M, N, C, ax, aw, bias, Y, X, K, list, count, wg, kWgCap, CB);
    check_launch("dequantize_kernel");
  }

  // gemv_rows_kernel for M rows (MM = 1, 4 or 8, the smallest that holds M) as a programmatic
  // dependent of the kernel before it: persistent blocks of 8 warps, as many as fit on the GPU at
  // once (or one warp per row, per row pair when GATED, when N is small).
  template <class T, bool GATED = false>
  void launch_rows(const T* X, int64_t M, int64_t K, int64_t N, const Int8Weight& W, const float* bias,
                   float threshold, T* Y, int act = 0) {
    if (M == 1) return launch_rows_mm<T, 1, GATED>(X, M, K, N, W, bias, threshold, Y, act);
    if (M <= 4) return launch_rows_mm<T, 4, GATED>(X, M, K, N, W, bias, threshold, Y, act);
    launch_rows_mm<T, 8, GATED>(X, M, K, N, W, bias, threshold, Y, act);
  }
  template <class T, int MM, bool GATED>
  void launch_rows_mm(const T* X, int64_t M, int64_t K, int64_t N, const Int8Weight& W, const float* bias,
                      float threshold, T* Y, int act) {
    const size_t smem = cuda::gemv_rows_smem_bytes(M, K, sizeof(T));
    auto* kern = cuda::gemv_rows_kernel<T, MM, GATED>;
    static bool attr_set = false;  // per instantiation
    if (!attr_set) {
      check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kRowsSmemMax)),
            "cudaFuncSetAttribute(gemv_rows_kernel)");
      attr_set = true;
    }
    // Blocks per SM at this shared-memory size, asked once per (kernel, size): not per call.
    int& per_sm = rows_occupancy_[{reinterpret_cast<const void*>(kern), smem}];
    if (per_sm == 0)
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 256, smem), "cudaOccupancy");
    const int64_t warps_needed = GATED ? N / 2 : N;  // one per row (per row pair when GATED)
    const int64_t blocks = std::clamp<int64_t>(
        std::min<int64_t>((warps_needed + 7) / 8, int64_t(std::max(per_sm, 1)) * sm_count_), 1, 1 << 30);
    launch_pdl(kern, dim3(unsigned(blocks)), smem, "gemv_rows_kernel", X, int(M), K, N, W.CB, W.SCB, bias,
               threshold, act, Y);
  }

  // kern<<<grid, 256, smem>>>(args...) on the stream as a programmatic dependent of the kernel
  // before it (sm_90+, unless LLMINT8_CUDA_NO_PDL): it may start, e.g. streaming weights, while
  // that kernel finishes, and waits for it with griddepcontrol.wait before reading its outputs.
  template <class... KArgs, class... Args>
  void launch_pdl(void (*kern)(KArgs...), dim3 grid, size_t smem, const char* what, Args... args) {
    check(cuda::launch_kernel(pdl_, stream_, grid, dim3(256), smem, kern, args...), what);
    check_launch(what);
  }

  // Whether int8_linear(W, X [M, K]) runs on the row GEMV (gemv_rows_kernel).
  bool on_row_gemv(const Int8Weight& W, const void* X, int64_t M, size_t tsize) const {
    const int64_t K = W.in_features;
    return M >= 1 && M <= 16 && M <= decode_rows_max_ && K > 0 && K % 16 == 0 &&
           reinterpret_cast<uintptr_t>(X) % 16 == 0 && reinterpret_cast<uintptr_t>(W.CB) % 16 == 0 &&
           cuda::gemv_rows_smem_bytes(M, K, tsize) <= kRowsSmemMax;
  }

 public:
  // cuda::int8_linear_gated (cuda_backend.h).
  bool int8_linear_gated(const Int8Weight& W, DType t, const void* X, int64_t M, float threshold,
                         const float* bias, int act, void* Y) {
    check_dims("int8_linear_gated", M, W.out_features, W.in_features);
    const size_t tsize = t == DType::F32 ? 4 : 2;
    if (W.out_features % 2 != 0 || W.n_kept != 0 || !X || !Y || !W.CB || !W.SCB ||
        !(t == DType::F16 || t == DType::BF16 || t == DType::F32) || !on_row_gemv(W, X, M, tsize))
      return false;
    const int64_t K = W.in_features, N = W.out_features;
    auto run = [&](auto* x, auto* y) {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
      launch_rows<T, true>(x, M, K, N, W, bias, threshold, y, act);
    };
    if (t == DType::F16) run(static_cast<const __half*>(X), static_cast<__half*>(Y));
    else if (t == DType::BF16) run(static_cast<const __nv_bfloat16*>(X), static_cast<__nv_bfloat16*>(Y));
    else run(static_cast<const float*>(X), static_cast<float*>(Y));
    return true;
  }

 private:
  template <class T>
  void linear_t(const Int8Weight& W, const T* X, int64_t M, float threshold, const float* bias,
                T* Y) {
    const int64_t K = W.in_features, N = W.out_features;
    const bool decode = M <= 16 && K > 0 && K % 16 == 0 &&
                        reinterpret_cast<uintptr_t>(X) % 16 == 0 &&
                        reinterpret_cast<uintptr_t>(W.CB) % 16 == 0;
    ensure(absmax_, size_t(M) * 4);
    float* absmax = absmax_.get<float>();
    if (decode) {
      // Few rows whose quantized copy fits in shared memory: ONE kernel quantizes and streams.
      if (on_row_gemv(W, X, M, sizeof(T))) {
        launch_rows<T>(X, M, K, N, W, bias, threshold, Y);
        return;
      }
      // Rows quantized once (outlier columns of other rows still in Q: the GEMV masks them).
      ensure(q_, size_t(16) * size_t(K));
      quantize_t<T>(X, M, K, threshold, q_.get<int8_t>(), absmax, nullptr, nullptr, nullptr, 0,
                    /*zero_cols=*/false);
      const int64_t total_chunks = (K + 63) / 64, tiles = (N + 31) / 32;
      // Blocks of 8 warps, 2 per SM (`slots` at once). Split K into S parts: at least enough
      // blocks to fill the slots, then the S with the least (waves x (chunks per block + a fixed
      // per-block cost of ~16 chunks' streaming time: prologue, split-K reduction, epilogue)).
      const int64_t slots = int64_t(sm_count_) * 2;
      const int64_t s_min = std::clamp<int64_t>(slots / tiles, 1, total_chunks);
      int64_t S = s_min;
      double best = 1e300;
      for (int64_t s = s_min; s <= std::min<int64_t>(total_chunks, s_min + 16); ++s) {
        const int64_t c = (total_chunks + s - 1) / s;
        const double cost = double((tiles * s + slots - 1) / slots) * double(c + 16);
        if (cost < best - 1e-9) { best = cost; S = s; }
      }
      if (decode_split_ > 0) S = std::min<int64_t>(decode_split_, total_chunks);
      const int64_t cps = (total_chunks + S - 1) / S;
      S = (total_chunks + cps - 1) / cps;
      if (tiles > 65535 * 1024LL || S > 65535) throw Error("int8_linear: shape too large");
      if (S > 1) {
        ensure(cacc_, size_t(16) * size_t(N) * 4);
        ensure(tickets_, size_t(tiles) * 4);
      }
      const size_t smem = size_t(cps) * 2 * 4;
      if (smem > 48 * 1024) throw Error("int8_linear: K too large for the decode kernel");
      // A programmatic dependent of the quantize kernel (sm_90+): starts streaming weights early.
      launch_pdl(cuda::gemv_int8_fused_kernel<T>, dim3(unsigned(tiles), unsigned(S)), smem, "gemv_int8_fused_kernel",
                 X, static_cast<const int8_t*>(q_.get<int8_t>()), int(M), K, N, W.CB, W.SCB, bias,
                 static_cast<const float*>(absmax), static_cast<const int*>(list_.get<int>()),
                 static_cast<const int*>(count_.get<int>()), cacc_.get<int32_t>(), tickets_.get<unsigned>(), Y,
                 int(cps), int(S));
      return;
    }
    ensure(q_, size_t(M) * size_t(std::max<int64_t>(K, 1)));
    ensure(c_, size_t(M) * size_t(N) * 4);
    int8_t* Q = q_.get<int8_t>();
    // Quantizes, zeroes the outlier columns and gathers their dequantized 16-bit weights.
    quantize_t<T>(X, M, K, threshold, Q, absmax, nullptr, W.CB, W.SCB, N);
    gemm(M, N, K, Q, W.CB, c_.get<int32_t>());
    if (threshold > 0.f && K > 0)
      dequant_t<T, true>(M, N, c_.get<int32_t>(), absmax, W.SCB, bias, Y, X, K, W.CB);
    else
      dequant_t<T, false>(M, N, c_.get<int32_t>(), absmax, W.SCB, bias, Y, nullptr, 0, nullptr);
  }

  // ---- the int8 GEMM: cuBLASLt IMMA, per-shape algorithm cache, fallback kernel --------------
  // Row-major C[M,N] = A[M,K] B[N,K]^T is, column-major, C^T[N,M] = B^T... i.e. cuBLASLt's
  // D = op(A') op(B') with A' = B viewed as a KxN column-major matrix (ld K) transposed, and
  // B' = A viewed as KxM column-major (ld K) -- the "TN" form IMMA supports natively.
  void gemm(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C) {
    const PlanKey key{M, N, K, alignment_of(A), alignment_of(B), alignment_of(C)};
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(M, N, K, A, B, C)).first;
    const Plan& p = it->second;
    if (p.use_lt) {
      const int32_t alpha = 1, beta = 0;
      check_lt(cublasLtMatmul(lt_, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo,
                              lt_ws_, kLtWorkspace, stream_),
               "cublasLtMatmul(int8)");
      return;
    }
    const dim3 grid(unsigned((N + 31) / 32), unsigned((M + 31) / 32));
    if (grid.y > 65535) throw Error("gemm_s8s8s32: M too large for the fallback kernel");
    cuda::gemm_s8_fallback_kernel<<<grid, 256, 0, stream_>>>(M, N, K, A, B, C);
    check_launch("gemm_s8_fallback_kernel");
  }

  static void release_plan(Plan& p) {
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    p = Plan{};
  }

  Plan make_plan(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C) {
    Plan p;
    // IMMA needs K (the leading dimension of both int8 operands) a multiple of 4; everything
    // else (K = 0, odd K) goes to the fallback kernel.
    if (K == 0 || K % 4 != 0) return p;
    try {
      check_lt(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32I, CUDA_R_32I), "MatmulDescCreate");
      const cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
      check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof(tA)), "set TRANSA");
      check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof(tB)), "set TRANSB");
      check_lt(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8I, uint64_t(K), uint64_t(N), K), "layout A");
      check_lt(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8I, uint64_t(K), uint64_t(M), K), "layout B");
      check_lt(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32I, uint64_t(N), uint64_t(M), N), "layout C");
      cublasLtMatmulPreference_t pref = nullptr;
      check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
      const uint64_t ws = kLtWorkspace;
      const uint32_t alA = alignment_of(B), alB = alignment_of(A), alC = alignment_of(C);
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alA, sizeof(alA));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alB, sizeof(alB));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alC, sizeof(alC));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alC, sizeof(alC));
      cublasLtMatmulHeuristicResult_t res[8];
      int n_res = 0;
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(lt_, p.op, p.a, p.b, p.c, p.c, pref, 8, res, &n_res);
      cublasLtMatmulPreferenceDestroy(pref);
      std::vector<int> ok;
      if (st == CUBLAS_STATUS_SUCCESS)
        for (int i = 0; i < n_res; ++i)
          if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= kLtWorkspace) ok.push_back(i);
      if (ok.empty()) { release_plan(p); return p; }
      p.algo = res[ok[0]].algo;
      // Time the top candidates once (not while capturing): the heuristic's first choice is not
      // always the fastest for the skinny shapes of LLM inference.
      if (ok.size() > 1 && !capturing()) {
        cudaEvent_t e0, e1;
        check(cudaEventCreate(&e0), "cudaEventCreate");
        check(cudaEventCreate(&e1), "cudaEventCreate");
        float best = 1e30f;
        const int32_t alpha = 1, beta = 0;
        for (size_t i = 0; i < std::min<size_t>(ok.size(), 4); ++i) {
          const cublasLtMatmulAlgo_t* algo = &res[ok[i]].algo;
          if (cublasLtMatmul(lt_, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, algo, lt_ws_,
                             kLtWorkspace, stream_) != CUBLAS_STATUS_SUCCESS)
            continue;
          check(cudaEventRecord(e0, stream_), "cudaEventRecord");
          for (int r = 0; r < 3; ++r)
            cublasLtMatmul(lt_, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, algo, lt_ws_,
                           kLtWorkspace, stream_);
          check(cudaEventRecord(e1, stream_), "cudaEventRecord");
          check(cudaEventSynchronize(e1), "cudaEventSynchronize");
          float ms = 0.f;
          check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
          if (ms < best) { best = ms; p.algo = *algo; }
        }
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        check(cudaGetLastError(), "cuBLASLt algorithm timing");
      }
      p.use_lt = true;
    } catch (const Error&) {
      release_plan(p);
    }
    return p;
  }

  int device_ = 0;
  int sm_count_ = 0;
  bool pdl_ = false;
  // M = 1 only by default: at M = 4 / 8 the dp4a row GEMV is slower than the split-K MMA one
  // (H100, 4096x14336: 41.8 vs 34.7 us at M = 4, 67.9 vs 34.7 at M = 8; bench/GPU_NOTES.md).
  int decode_rows_max_ = 1;
  std::map<std::pair<const void*, size_t>, int> rows_occupancy_;  // launch_rows: blocks per SM
  static constexpr size_t kRowsSmemMax = 200 * 1024;  // shared memory the row GEMV may take
  int decode_split_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_ws_ = nullptr;
  std::map<PlanKey, Plan> plans_;
  Scratch mask_, list_, count_, ticket_, absmax_, q_, c_, wg_, cacc_, tickets_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return nullptr;
  }
  if (device < 0 || device >= n)
    throw Error("make_cuda_backend: device " + std::to_string(device) + " does not exist (" +
                std::to_string(n) + " CUDA devices)");
  return std::make_unique<CudaBackend>(device);
}

void* cuda::stream_of(Backend& b) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  return c ? static_cast<void*>(c->stream()) : nullptr;
}

bool cuda::int8_linear_gated(Backend& b, const Int8Weight& W, DType t, const void* X, int64_t M, float threshold,
                             const float* bias, int act, void* Y) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  return c && c->int8_linear_gated(W, t, X, M, threshold, bias, act, Y);
}

}  // namespace llmint8

// A weight matrix W [out, in] as the model holds it, with an optional float32 bias:
//  * Int8: LLM.int8() CB/SCB in backend memory; forward = backend->int8_linear (the
//    mixed-precision decomposition with the model's threshold).
//  * F32: dense float32; forward = OpenBLAS sgemm/sgemv.
//  * F16 / BF16: dense 16-bit storage; forward widens blocks of rows to float32 and multiplies
//    them with sgemm/sgemv (products and sums in float32, like a float32 matmul of the 16-bit
//    weights).
// Activations are float32 in every case. Embedding tables use the same class (row()).
// Threading: the output features are split over `threads` OpenMP threads, each calling OpenBLAS
// on its block; the model sets OpenBLAS itself to one thread, so that one thread pool (OpenMP's)
// runs everything -- OpenBLAS's own pthreads spinning against OpenMP's made 16-bit decoding
// ~50x slower on a shared 2-core machine.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llmint8/backend.h"
#include "llmint8/dtype.h"

namespace llmint8::model {

enum class Storage { Int8, F32, F16, BF16 };

class Linear {
 public:
  Linear() = default;
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;
  Linear(Linear&& o) noexcept;
  Linear& operator=(Linear&& o) noexcept;
  ~Linear();

  // Takes W [out, in] float32 (consumed: F32 storage keeps the buffer). For Int8 the rows are
  // quantized by backend->quantize_rowwise with threshold 0 (CB = q, SCB = absmax).
  void set(std::string name, int64_t out, int64_t in, std::vector<float>&& w, Storage st,
           Backend* backend);
  // Takes an already quantized weight (a bitsandbytes 8-bit checkpoint): CB [out, in], SCB [out].
  void set_int8(std::string name, int64_t out, int64_t in, const std::vector<int8_t>& cb,
                const std::vector<float>& scb, Backend* backend);
  // Same, but CB stays where it is -- the checkpoint's read-only mapping -- when the backend
  // works on host memory (zero-copy loading of 8-bit checkpoints); the caller keeps the mapping
  // alive for the Linear's lifetime. Other backends get a copy.
  void set_int8_mapped(std::string name, int64_t out, int64_t in, const int8_t* cb,
                       const std::vector<float>& scb, Backend* backend);
  bool borrows_weight() const { return borrowed_cb_; }
  // --keep-outlier-columns (include/llmint8/backend.h): keeps the fp16 weight columns `cols`
  // (strictly ascending, < in) beside the int8 weight; w16 [out, cols.size()] fp16 bits. Int8 only;
  // an empty `cols` removes them. Throws Error naming the Linear on bad input.
  void set_kept_columns(const std::vector<int32_t>& cols, const std::vector<uint16_t>& w16);
  int64_t kept_columns() const { return w8_.n_kept; }
  void set_bias(std::vector<float>&& b) { bias_ = std::move(b); }
  void set_threads(int t) { threads_ = t > 0 ? t : 1; }
  // LoadOptions::activation_observer (owned by the model, which outlives its Linears): forward()
  // shows it X first when it is set.
  using Observer = std::function<void(const std::string&, const float*, int64_t, int64_t)>;
  void set_observer(const Observer* obs) { observer_ = obs; }

  // Y [M, out] = X [M, in] * W^T + bias. `threshold` is the int8 outlier threshold.
  void forward(const float* X, int64_t M, float* Y, float threshold) const;
  // Row r of W widened to float32 (embedding lookup); not for Int8.
  void row(int64_t r, float* out) const;

  const std::string& name() const { return name_; }
  int64_t out_features() const { return out_; }
  int64_t in_features() const { return in_; }
  Storage storage() const { return st_; }
  bool has_bias() const { return !bias_.empty(); }
  const std::vector<float>& bias() const { return bias_; }
  const Int8Weight& int8() const { return w8_; }
  uint64_t bytes() const;  // held bytes: weight (+ SCB + kept columns) + bias

 private:
  void release();
  void release_kept();
  void reset_int8(std::string name, int64_t out, int64_t in, Backend* backend);  // empty Int8 Linear
  std::string name_;
  int64_t out_ = 0, in_ = 0;
  Storage st_ = Storage::F32;
  Backend* backend_ = nullptr;
  Int8Weight w8_;
  bool borrowed_cb_ = false;  // w8_.CB points into a checkpoint mapping (not ours to release)
  std::vector<float> wf_;
  std::vector<uint16_t> wh_;  // f16 or bf16 bits
  std::vector<float> bias_;
  int threads_ = 1;
  const Observer* observer_ = nullptr;
};

// Y[m, n] (row stride ldy) = sum_k X[m, k] W[n, k] for W [nb, K] float32: one OpenBLAS call
// (sgemv when M == 1) in the calling thread.
void gemm_xwt(const float* X, int64_t M, int64_t K, const float* W, int64_t nb, float* Y, int64_t ldy);

// GELU (erf), tanh-approximated GELU, SiLU, ReLU, quick GELU on n values in place.
enum class Act { SiLU, GELU, GELUTanh, ReLU, QuickGELU };
Act parse_act(const std::string& normalised);
void apply_act(Act a, float* x, int64_t n);

}  // namespace llmint8::model

#include "model/linear.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "cpu/convert.h"
#include "llmint8/error.h"

namespace llmint8::model {

Linear::Linear(Linear&& o) noexcept { *this = std::move(o); }

Linear& Linear::operator=(Linear&& o) noexcept {
  if (this != &o) {
    release();
    name_ = std::move(o.name_);
    out_ = o.out_;
    in_ = o.in_;
    st_ = o.st_;
    backend_ = o.backend_;
    w8_ = o.w8_;
    borrowed_cb_ = o.borrowed_cb_;
    wf_ = std::move(o.wf_);
    wh_ = std::move(o.wh_);
    bias_ = std::move(o.bias_);
    observer_ = o.observer_;
    o.w8_ = {};
    o.backend_ = nullptr;
  }
  return *this;
}

Linear::~Linear() { release(); }

void Linear::release_kept() {
  if (backend_) {
    if (w8_.kept_cols) backend_->release(const_cast<int32_t*>(w8_.kept_cols));
    if (w8_.kept_w) backend_->release(const_cast<uint16_t*>(w8_.kept_w));
  }
  w8_.n_kept = 0;
  w8_.kept_cols = nullptr;
  w8_.kept_w = nullptr;
}

void Linear::release() {
  release_kept();
  if (backend_) {
    if (w8_.CB && !borrowed_cb_) backend_->release(const_cast<int8_t*>(w8_.CB));
    if (w8_.SCB) backend_->release(const_cast<float*>(w8_.SCB));
  }
  w8_ = {};
  borrowed_cb_ = false;
}

void Linear::set_kept_columns(const std::vector<int32_t>& cols, const std::vector<uint16_t>& w16) {
  if (st_ != Storage::Int8 || !backend_) throw Error(name_ + ": kept columns need an int8 weight");
  const int64_t n = int64_t(cols.size());
  if (n > in_)
    throw Error(name_ + ": " + std::to_string(n) + " kept columns, more than its " + std::to_string(in_) + " inputs");
  for (int64_t j = 0; j < n; ++j) {
    const int32_t c = cols[size_t(j)];
    if (c < 0 || c >= in_ || (j > 0 && c <= cols[size_t(j - 1)]))
      throw Error(name_ + ": kept column indices must be ascending, unique and < " + std::to_string(in_) +
                  " (index " + std::to_string(j) + " is " + std::to_string(c) + ")");
  }
  if (w16.size() != size_t(out_) * size_t(n))
    throw Error(name_ + ": kept weight columns hold " + std::to_string(w16.size()) + " values, expected " +
                std::to_string(out_) + " x " + std::to_string(n));
  release_kept();
  if (n == 0) return;
  auto* c = static_cast<int32_t*>(backend_->alloc(size_t(n) * sizeof(int32_t)));
  auto* w = static_cast<uint16_t*>(backend_->alloc(std::max<size_t>(w16.size(), 1) * sizeof(uint16_t)));
  backend_->to_device(c, cols.data(), size_t(n) * sizeof(int32_t));
  if (!w16.empty()) backend_->to_device(w, w16.data(), w16.size() * sizeof(uint16_t));
  w8_.n_kept = n;
  w8_.kept_cols = c;
  w8_.kept_w = w;
}

void Linear::set(std::string name, int64_t out, int64_t in, std::vector<float>&& w, Storage st,
                 Backend* backend) {
  release();
  name_ = std::move(name);
  out_ = out;
  in_ = in;
  st_ = st;
  backend_ = backend;
  wf_.clear();
  wh_.clear();
  const size_t n = size_t(out) * size_t(in);
  if (w.size() != n) throw Error(name_ + ": internal error: weight buffer size mismatch");
  switch (st) {
    case Storage::Int8: {
      if (!backend) throw Error(name_ + ": internal error: int8 weight without a backend");
      auto* cb = static_cast<int8_t*>(backend->alloc(n));
      auto* scb = static_cast<float*>(backend->alloc(size_t(out) * sizeof(float)));
      w8_ = Int8Weight{out, in, cb, scb};
      // The weights' own row-wise quantization: threshold 0, no outlier columns.
      backend->quantize_rowwise(DType::F32, w.data(), out, in, 0.f, cb, scb, nullptr);
      std::vector<float>().swap(w);
      break;
    }
    case Storage::F32: wf_ = std::move(w); break;
    case Storage::F16:
    case Storage::BF16: {
      wh_.resize(n);
      const bool h = st == Storage::F16;
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < int64_t(n); ++i)
        wh_[size_t(i)] = h ? to_f16(w[size_t(i)]).bits : to_bf16(w[size_t(i)]).bits;
      std::vector<float>().swap(w);
      break;
    }
  }
}

void Linear::reset_int8(std::string name, int64_t out, int64_t in, Backend* backend) {
  release();
  name_ = std::move(name);
  out_ = out;
  in_ = in;
  st_ = Storage::Int8;
  backend_ = backend;
  wf_.clear();
  wh_.clear();
}

void Linear::set_int8(std::string name, int64_t out, int64_t in, const std::vector<int8_t>& cb,
                      const std::vector<float>& scb, Backend* backend) {
  reset_int8(std::move(name), out, in, backend);
  const size_t n = size_t(out) * size_t(in);
  if (cb.size() != n || scb.size() != size_t(out))
    throw Error(name_ + ": internal error: int8 weight buffer size mismatch");
  auto* c = static_cast<int8_t*>(backend->alloc(n));
  auto* s = static_cast<float*>(backend->alloc(size_t(out) * sizeof(float)));
  backend->to_device(c, cb.data(), n);
  backend->to_device(s, scb.data(), size_t(out) * sizeof(float));
  w8_ = Int8Weight{out, in, c, s};
}

void Linear::set_int8_mapped(std::string name, int64_t out, int64_t in, const int8_t* cb,
                             const std::vector<float>& scb, Backend* backend) {
  if (!backend->is_host()) {
    set_int8(std::move(name), out, in, std::vector<int8_t>(cb, cb + size_t(out) * size_t(in)), scb, backend);
    return;
  }
  reset_int8(std::move(name), out, in, backend);
  if (scb.size() != size_t(out)) throw Error(name_ + ": internal error: SCB size mismatch");
  auto* s = static_cast<float*>(backend->alloc(size_t(out) * sizeof(float)));
  backend->to_device(s, scb.data(), size_t(out) * sizeof(float));
  w8_ = Int8Weight{out, in, cb, s};
  borrowed_cb_ = true;
}

uint64_t Linear::bytes() const {
  const uint64_t n = uint64_t(out_) * uint64_t(in_);
  uint64_t b = 0;
  switch (st_) {
    case Storage::Int8: b = n + uint64_t(out_) * 4 + uint64_t(w8_.n_kept) * (4 + uint64_t(out_) * 2); break;
    case Storage::F32: b = n * 4; break;
    case Storage::F16:
    case Storage::BF16: b = n * 2; break;
  }
  return b + bias_.size() * 4;
}

void Linear::row(int64_t r, float* out) const {
  if (r < 0 || r >= out_) throw Error(name_ + ": row " + std::to_string(r) + " out of range");
  const size_t off = size_t(r) * size_t(in_);
  switch (st_) {
    case Storage::F32: std::copy_n(wf_.data() + off, in_, out); break;
    case Storage::F16: cpu::widen_f16(wh_.data() + off, out, in_); break;
    case Storage::BF16: cpu::widen_bf16(wh_.data() + off, out, in_); break;
    case Storage::Int8: {
      // Dequantized int8 row (only used if an embedding were ever quantized).
      const float s = w8_.SCB[r] * kInvInt8Max;
      for (int64_t k = 0; k < in_; ++k) out[k] = float(w8_.CB[off + size_t(k)]) * s;
      break;
    }
  }
}

void gemm_xwt(const float* X, int64_t M, int64_t K, const float* W, int64_t nb, float* Y, int64_t ldy) {
  if (nb <= 0) return;
  if (M == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(nb), int(K), 1.0f, W, int(K), X, 1, 0.0f, Y, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(nb), int(K), 1.0f, X, int(K), W,
                int(K), 0.0f, Y, int(ldy));
}

void Linear::forward(const float* X, int64_t M, float* Y, float threshold) const {
  if (M <= 0) return;
  if (observer_ && *observer_) (*observer_)(name_, X, M, in_);
  const int64_t N = out_, K = in_;
  if (st_ == Storage::Int8) {
    backend_->int8_linear(w8_, DType::F32, X, M, threshold, bias_.empty() ? nullptr : bias_.data(), Y);
    return;
  }
  // Blocks of output rows: 16-bit blocks are widened into a per-thread buffer of ~256 KiB.
  const bool dense32 = st_ == Storage::F32;
  const int64_t rb = dense32 ? std::max<int64_t>(16, (N + threads_ - 1) / threads_)
                             : std::clamp<int64_t>((int64_t(1) << 16) / std::max<int64_t>(K, 1), 8, 256);
  const int64_t blocks = (N + rb - 1) / rb;
  const bool parallel = threads_ > 1 && blocks > 1 && M * N * K >= (int64_t(1) << 21);  // >~0.5 ms of work
  const bool h = st_ == Storage::F16;
#pragma omp parallel num_threads(threads_) if (parallel)
  {
    std::vector<float> buf(dense32 ? 0 : size_t(rb) * size_t(K));
#pragma omp for schedule(static)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t n0 = bi * rb, nb = std::min(rb, N - n0);
      const float* w = wf_.data() + size_t(n0) * size_t(K);
      if (!dense32) {
        const uint16_t* src = wh_.data() + size_t(n0) * size_t(K);
        const int64_t cnt = nb * K;
        if (h)
          cpu::widen_f16(src, buf.data(), cnt);
        else
          cpu::widen_bf16(src, buf.data(), cnt);
        w = buf.data();
      }
      gemm_xwt(X, M, K, w, nb, Y + n0, N);
    }
  }
  if (!bias_.empty()) {
    for (int64_t m = 0; m < M; ++m) {
      float* y = Y + m * N;
      for (int64_t n = 0; n < N; ++n) y[n] += bias_[size_t(n)];
    }
  }
}

Act parse_act(const std::string& s) {
  if (s == "silu") return Act::SiLU;
  if (s == "gelu") return Act::GELU;
  if (s == "gelu_tanh") return Act::GELUTanh;
  if (s == "relu") return Act::ReLU;
  if (s == "quick_gelu") return Act::QuickGELU;
  throw Error("unsupported activation '" + s + "'");
}

void apply_act(Act a, float* x, int64_t n) {
  switch (a) {
    case Act::SiLU:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
      break;
    case Act::GELU:  // 0.5 x (1 + erf(x / sqrt 2))
      for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
      break;
    case Act::GELUTanh:  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
      }
      break;
    case Act::ReLU:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] < 0.f ? 0.f : x[i];  // NaN propagates, as torch.relu
      break;
    case Act::QuickGELU:  // x * sigmoid(1.702 x)
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      break;
  }
}

}  // namespace llmint8::model

// Helpers shared by the numerics tests: a portable seeded RNG, host arrays of F32/F16/BF16
// values, the rounding constants of each dtype, and DType dispatch onto the scalar reference.
// Header-only so that any tests/test_*.cpp can include it (each test file is its own executable).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "llmint8/backend.h"
#include "llmint8/dtype.h"
#include "quant/reference.h"

namespace llmint8::testutil {

// std::*_distribution results differ between standard libraries; these draws are built on the
// bit-exact std::mt19937_64 only, so a fixed seed means the same data everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t bits() { return g_(); }
  double uniform() { return double(g_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t integer(int64_t lo, int64_t hi) {  // [lo, hi], modulo bias is irrelevant here
    return lo + int64_t(g_() % uint64_t(hi - lo + 1));
  }
  double normal() {  // Box-Muller
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  bool chance(double p) { return uniform() < p; }

 private:
  std::mt19937_64 g_;
};

inline bool float_bits_equal(float a, float b) { return float_to_bits(a) == float_to_bits(b); }

// Unit roundoff (half an ulp at 1) of each floating dtype.
inline double unit_roundoff(DType t) {
  switch (t) {
    case DType::F32: return 0x1.0p-24;
    case DType::F16: return 0x1.0p-11;
    case DType::BF16: return 0x1.0p-8;
    default: throw std::invalid_argument("unit_roundoff: not a float dtype");
  }
}
// Half the subnormal spacing: the absolute rounding error allowance near zero.
inline double subnormal_half_spacing(DType t) {
  switch (t) {
    case DType::F32: return 0x1.0p-150;
    case DType::F16: return 0x1.0p-25;
    case DType::BF16: return 0x1.0p-134;
    default: throw std::invalid_argument("subnormal_half_spacing: not a float dtype");
  }
}
inline const char* dtype_label(DType t) {
  return t == DType::F32 ? "F32" : t == DType::F16 ? "F16" : t == DType::BF16 ? "BF16" : "?";
}

// A host array of F32/F16/BF16 values, stored in the dtype's own encoding.
class HostArray {
 public:
  HostArray(DType t, size_t n) : t_(t), n_(n), bytes_(n * dtype_size(t)) {}
  HostArray(DType t, const std::vector<float>& v) : HostArray(t, v.size()) {
    for (size_t i = 0; i < v.size(); ++i) set(i, v[i]);
  }
  DType type() const { return t_; }
  size_t size() const { return n_; }
  size_t nbytes() const { return bytes_.size(); }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  // Stores v rounded to the dtype (ties to even).
  void set(size_t i, float v) {
    switch (t_) {
      case DType::F32: std::memcpy(&bytes_[i * 4], &v, 4); break;
      case DType::F16: { const f16 h = to_f16(v); std::memcpy(&bytes_[i * 2], &h.bits, 2); break; }
      case DType::BF16: { const bf16 h = to_bf16(v); std::memcpy(&bytes_[i * 2], &h.bits, 2); break; }
      default: throw std::invalid_argument("HostArray: not a float dtype");
    }
  }
  float get(size_t i) const {
    switch (t_) {
      case DType::F32: { float v; std::memcpy(&v, &bytes_[i * 4], 4); return v; }
      case DType::F16: { f16 h; std::memcpy(&h.bits, &bytes_[i * 2], 2); return to_float(h); }
      case DType::BF16: { bf16 h; std::memcpy(&h.bits, &bytes_[i * 2], 2); return to_float(h); }
      default: throw std::invalid_argument("HostArray: not a float dtype");
    }
  }
  std::vector<float> to_floats() const {
    std::vector<float> v(n_);
    for (size_t i = 0; i < n_; ++i) v[i] = get(i);
    return v;
  }
  // Bit-for-bit equality (empty arrays too: no memcmp on null pointers).
  friend bool same_bytes(const HostArray& a, const HostArray& b) { return a.bytes_ == b.bytes_; }

 private:
  DType t_;
  size_t n_;
  std::vector<uint8_t> bytes_;
};

// The largest value of dtype t strictly below the positive, representable value v.
inline float next_below(DType t, float v) {
  switch (t) {
    case DType::F32: return std::nextafter(v, 0.0f);
    case DType::F16: return to_float(f16{uint16_t(to_f16(v).bits - 1)});
    case DType::BF16: return to_float(bf16{uint16_t(to_bf16(v).bits - 1)});
    default: throw std::invalid_argument("next_below: not a float dtype");
  }
}

// DType dispatch onto the scalar reference (host memory).
inline void ref_quantize_rowwise(const HostArray& X, int64_t M, int64_t K, float threshold,
                                 int8_t* Q, float* absmax, uint8_t* outlier_cols) {
  switch (X.type()) {
    case DType::F32: return ref::quantize_rowwise(static_cast<const float*>(X.data()), M, K, threshold, Q, absmax, outlier_cols);
    case DType::F16: return ref::quantize_rowwise(static_cast<const f16*>(X.data()), M, K, threshold, Q, absmax, outlier_cols);
    case DType::BF16: return ref::quantize_rowwise(static_cast<const bf16*>(X.data()), M, K, threshold, Q, absmax, outlier_cols);
    default: throw std::invalid_argument("ref_quantize_rowwise: not a float dtype");
  }
}
inline void ref_int8_linear(const Int8Weight& W, const HostArray& X, int64_t M, float threshold,
                            const float* bias, HostArray& Y) {
  switch (X.type()) {
    case DType::F32: return ref::int8_linear(W, static_cast<const float*>(X.data()), M, threshold, bias, static_cast<float*>(Y.data()));
    case DType::F16: return ref::int8_linear(W, static_cast<const f16*>(X.data()), M, threshold, bias, static_cast<f16*>(Y.data()));
    case DType::BF16: return ref::int8_linear(W, static_cast<const bf16*>(X.data()), M, threshold, bias, static_cast<bf16*>(Y.data()));
    default: throw std::invalid_argument("ref_int8_linear: not a float dtype");
  }
}

// Y64 [M,N] = X [M,K] * W [N,K]^T + bias in float64 (the error references).
inline std::vector<double> matmul_f64(const std::vector<float>& X, const std::vector<float>& W,
                                      const float* bias, int64_t M, int64_t N, int64_t K) {
  std::vector<double> Y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias ? double(bias[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += double(X[m * K + k]) * double(W[n * K + k]);
      Y[m * N + n] = acc;
    }
  return Y;
}

}  // namespace llmint8::testutil

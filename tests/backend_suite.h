// The conformance suite every llmint8::Backend runs: each primitive of include/llmint8/backend.h
// is checked, through the Backend interface only (alloc / to_device / to_host + primitives), against
// the scalar reference of src/quant/reference.h run on the host, against hand-computed values, and
// (for the float outputs) against a float64 computation within a derived error bound.
//
// How to run it on a backend: include this header in exactly ONE .cpp of a test executable and
// instantiate the suite with a factory. A factory that returns null skips every test (e.g. no GPU):
//
//   #include "backend_suite.h"
//   using llmint8::suite::BackendCase;
//   INSTANTIATE_TEST_SUITE_P(Cuda, BackendSuite,
//       ::testing::Values(BackendCase{"cuda", [] { return llmint8::make_cuda_backend(); }}),
//       llmint8::suite::backend_case_name);
//
// (tests/test_backend_cpu.cpp does this for the reference and the CPU backends.) All data comes
// from fixed seeds, so a failure reproduces.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "llmint8/backend.h"
#include "llmint8/dtype.h"
#include "llmint8/error.h"
#include "numeric_util.h"
#include "quant/reference.h"

namespace llmint8::suite {

// One backend under test: a name (used in the test names) and a factory; null = not available.
struct BackendCase {
  std::string name;
  std::function<std::unique_ptr<Backend>()> make;
};
inline void PrintTo(const BackendCase& c, std::ostream* os) { *os << c.name; }
inline std::string backend_case_name(const ::testing::TestParamInfo<BackendCase>& info) {
  return info.param.name;
}

// A buffer in backend memory, filled from / read back to host vectors.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer(Backend& b, size_t n) : b_(&b), n_(n), p_(static_cast<T*>(b.alloc(std::max<size_t>(n * sizeof(T), 1)))) {}
  DeviceBuffer(Backend& b, const std::vector<T>& host) : DeviceBuffer(b, host.size()) {
    if (n_) b_->to_device(p_, host.data(), n_ * sizeof(T));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { b_->release(p_); }
  T* get() const { return p_; }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    b_->synchronize();
    if (n_) b_->to_host(h.data(), p_, n_ * sizeof(T));
    return h;
  }

 private:
  Backend* b_;
  size_t n_;
  T* p_;
};

// A HostArray (F32/F16/BF16 encoding) in backend memory.
class DeviceArray {
 public:
  DeviceArray(Backend& b, const testutil::HostArray& h) : buf_(b, h.nbytes()), type_(h.type()), n_(h.size()) {
    if (h.nbytes()) b.to_device(buf_.get(), h.data(), h.nbytes());
  }
  DeviceArray(Backend& b, DType t, size_t n) : buf_(b, n * dtype_size(t)), type_(t), n_(n) {}
  void* get() const { return buf_.get(); }
  testutil::HostArray download() const {
    testutil::HostArray h(type_, n_);
    const std::vector<uint8_t> bytes = buf_.download();
    if (!bytes.empty()) std::memcpy(h.data(), bytes.data(), h.nbytes());
    return h;
  }

 private:
  DeviceBuffer<uint8_t> buf_;
  DType type_;
  size_t n_;
};

inline constexpr DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16};

// Bitwise equality of absmax values (NaN equal to NaN): the row scales must match exactly.
inline bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || testutil::float_bits_equal(a, b);
}

}  // namespace llmint8::suite

class BackendSuite : public ::testing::TestWithParam<llmint8::suite::BackendCase> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    if (!backend_) GTEST_SKIP() << "backend '" << GetParam().name << "' is not available here";
  }
  llmint8::Backend& backend() { return *backend_; }

  struct QuantResult {
    std::vector<int8_t> q;
    std::vector<float> absmax;
    std::vector<uint8_t> mask;  // empty when threshold <= 0 (no mask requested)
  };
  // Runs the backend's quantize_rowwise on host data; outlier_cols is passed only for threshold > 0.
  QuantResult quantize(const llmint8::testutil::HostArray& X, int64_t M, int64_t K, float threshold) {
    using namespace llmint8::suite;
    DeviceArray dx(backend(), X);
    DeviceBuffer<int8_t> dq(backend(), size_t(M * K));
    DeviceBuffer<float> da(backend(), size_t(M));
    DeviceBuffer<uint8_t> dm(backend(), size_t(K));
    backend().quantize_rowwise(X.type(), dx.get(), M, K, threshold, dq.get(), da.get(),
                               threshold > 0.f ? dm.get() : nullptr);
    QuantResult r{dq.download(), da.download(), {}};
    if (threshold > 0.f) r.mask = dm.download();
    return r;
  }
  QuantResult quantize_ref(const llmint8::testutil::HostArray& X, int64_t M, int64_t K, float threshold) {
    QuantResult r{std::vector<int8_t>(size_t(M * K)), std::vector<float>(static_cast<size_t>(M)), {}};
    std::vector<uint8_t> mask(static_cast<size_t>(K));
    llmint8::testutil::ref_quantize_rowwise(X, M, K, threshold, r.q.data(), r.absmax.data(),
                                            threshold > 0.f ? mask.data() : nullptr);
    if (threshold > 0.f) r.mask = mask;
    return r;
  }

  std::unique_ptr<llmint8::Backend> backend_;
};

namespace llmint8::suite {

// Compares a quantization result to the expected one; reports at most a few mismatches.
inline void expect_quant_equal(int64_t M, int64_t K,
                               const std::vector<int8_t>& q, const std::vector<float>& absmax,
                               const std::vector<uint8_t>& mask, const std::vector<int8_t>& eq,
                               const std::vector<float>& eabsmax, const std::vector<uint8_t>& emask) {
  int reported = 0;
  for (int64_t m = 0; m < M; ++m)
    if (!same_float(absmax[m], eabsmax[m]) && reported++ < 5)
      ADD_FAILURE() << "absmax[" << m << "] = " << absmax[m] << ", expected " << eabsmax[m];
  for (int64_t i = 0; i < M * K; ++i)
    if (q[i] != eq[i] && reported++ < 10)
      ADD_FAILURE() << "q[" << i / K << "," << i % K << "] = " << int(q[i]) << ", expected " << int(eq[i]);
  ASSERT_EQ(mask.size(), emask.size());
  for (size_t k = 0; k < mask.size(); ++k)
    if (bool(mask[k]) != bool(emask[k]) && reported++ < 15)
      ADD_FAILURE() << "outlier_cols[" << k << "] = " << int(mask[k]) << ", expected " << int(emask[k]);
}

}  // namespace llmint8::suite

// ---------------------------------------------------------------------------------------------
// gemm_s8s8s32: exact int32, so bit-exact against the scalar reference.

TEST_P(BackendSuite, GemmBitExactOverShapes) {
  using namespace llmint8;
  using namespace llmint8::suite;
  // M=1 (decode), K=1, K not a multiple of 64, odd N; every combination.
  const int64_t Ms[] = {1, 2, 7, 16, 17, 64, 129};
  const int64_t Ns[] = {1, 3, 31, 257};
  const int64_t Ks[] = {1, 3, 63, 64, 65, 255, 1000};
  testutil::Rng rng(20240601);
  int failures = 0;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks) {
        // The range quantize produces, [-127, 127]; the full int8 range has its own test.
        std::vector<int8_t> A(size_t(M * K)), B(size_t(N * K));
        for (auto& a : A) a = int8_t(rng.integer(-127, 127));
        for (auto& b : B) b = int8_t(rng.integer(-127, 127));
        std::vector<int32_t> expect(size_t(M * N));
        ref::gemm_s8s8s32(M, N, K, A.data(), B.data(), expect.data());
        DeviceBuffer<int8_t> dA(backend(), A), dB(backend(), B);
        DeviceBuffer<int32_t> dC(backend(), size_t(M * N));
        backend().gemm_s8s8s32(M, N, K, dA.get(), dB.get(), dC.get());
        const std::vector<int32_t> got = dC.download();
        for (int64_t i = 0; i < M * N; ++i)
          if (got[i] != expect[i]) {
            ADD_FAILURE() << "M=" << M << " N=" << N << " K=" << K << ": C[" << i / N << "," << i % N
                          << "] = " << got[i] << ", expected " << expect[i];
            ++failures;
            break;  // one report per shape
          }
        if (failures > 10) return;
      }
}

TEST_P(BackendSuite, GemmExtremeValuesExact) {
  using namespace llmint8;
  using namespace llmint8::suite;
  // Saturation-prone inputs (e.g. 16-bit intermediate sums in u8*s8 SIMD tricks) with results
  // written out by hand: every product is +-127*127 = +-16129, or (-128)^2 = 16384.
  struct Case { int64_t M, N, K; int8_t a, b; int64_t expect_per_k; };
  const Case cases[] = {
      {3, 5, 1000, 127, 127, 16129},    {2, 3, 4096, 127, -127, -16129},
      {1, 7, 8191, -127, -127, 16129},  {4, 2, 4096, -128, -128, 16384},
      {5, 3, 4099, -128, 127, -16256},
  };
  for (const Case& c : cases) {
    std::vector<int8_t> A(size_t(c.M * c.K), c.a), B(size_t(c.N * c.K), c.b);
    DeviceBuffer<int8_t> dA(backend(), A), dB(backend(), B);
    DeviceBuffer<int32_t> dC(backend(), size_t(c.M * c.N));
    backend().gemm_s8s8s32(c.M, c.N, c.K, dA.get(), dB.get(), dC.get());
    const std::vector<int32_t> got = dC.download();
    for (int64_t i = 0; i < c.M * c.N; ++i)
      ASSERT_EQ(int64_t(got[i]), c.K * c.expect_per_k)
          << "a=" << int(c.a) << " b=" << int(c.b) << " K=" << c.K << " at " << i;
  }
  // Alternating signs along k: the sum cancels to a small number exactly.
  const int64_t M = 2, N = 3, K = 1027;
  std::vector<int8_t> A(size_t(M * K)), B(size_t(N * K));
  for (int64_t i = 0; i < M * K; ++i) A[i] = (i % K) % 2 ? -127 : 127;
  for (int64_t i = 0; i < N * K; ++i) B[i] = int8_t(-128 + int((i % K) % 256));
  std::vector<int32_t> expect(size_t(M * N));
  ref::gemm_s8s8s32(M, N, K, A.data(), B.data(), expect.data());
  DeviceBuffer<int8_t> dA(backend(), A), dB(backend(), B);
  DeviceBuffer<int32_t> dC(backend(), size_t(M * N));
  backend().gemm_s8s8s32(M, N, K, dA.get(), dB.get(), dC.get());
  EXPECT_EQ(dC.download(), expect);
}

// ---------------------------------------------------------------------------------------------
// quantize_rowwise: bit-exact (q, absmax, outlier mask) against the reference and hand values.

TEST_P(BackendSuite, QuantizeRandomMatchesReference) {
  using namespace llmint8;
  using namespace llmint8::suite;
  struct Shape { int64_t M, K; };
  const Shape shapes[] = {{1, 1}, {1, 64}, {2, 3}, {7, 65}, {16, 1000}, {17, 255}, {129, 63}, {3, 4096}};
  const float thresholds[] = {0.f, 6.f, 2.5f};
  testutil::Rng rng(77);
  for (DType t : kFloatTypes)
    for (const Shape s : shapes)
      for (float th : thresholds) {
        SCOPED_TRACE(::testing::Message() << testutil::dtype_label(t) << " M=" << s.M << " K=" << s.K
                                          << " threshold=" << th);
        testutil::HostArray X(t, size_t(s.M * s.K));
        const float below = th > 0.f ? testutil::next_below(t, th) : 1.f;
        for (int64_t m = 0; m < s.M; ++m) {
          const bool zero_row = rng.chance(0.05);
          const double scale = rng.uniform(0.01, 3.0);
          for (int64_t k = 0; k < s.K; ++k) X.set(size_t(m * s.K + k), zero_row ? 0.f : float(scale * rng.normal()));
        }
        // Planted outliers: exactly at the threshold, just under it, negative, and large.
        const int64_t n_plant = std::max<int64_t>(1, s.M * s.K / 100);
        for (int64_t i = 0; i < n_plant && th > 0.f; ++i) {
          const size_t at = size_t(rng.integer(0, s.M * s.K - 1));
          const float sign = rng.chance(0.5) ? -1.f : 1.f;
          switch (rng.integer(0, 3)) {
            case 0: X.set(at, sign * th); break;
            case 1: X.set(at, sign * below); break;
            default: X.set(at, sign * float(rng.uniform(th, 60.0))); break;
          }
        }
        const QuantResult got = quantize(X, s.M, s.K, th), expect = quantize_ref(X, s.M, s.K, th);
        expect_quant_equal(s.M, s.K, got.q, got.absmax, got.mask, expect.q, expect.absmax, expect.mask);
        if (HasFailure()) return;
      }
}

TEST_P(BackendSuite, QuantizeThresholdBoundaryExplicit) {
  using namespace llmint8;
  using namespace llmint8::suite;
  // threshold 6: |x| >= 6 is an outlier (6 itself counts), the largest dtype value below 6 is not.
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(testutil::dtype_label(t));
    const float u = testutil::next_below(t, 6.f);  // F32 6-2^-21, F16 5.99609375, BF16 5.96875
    const int64_t M = 3, K = 6;
    const testutil::HostArray X(t, std::vector<float>{
        6.f,  u,  1.f, 0.f,  -0.5f, 0.25f,   // col 0 outlier (exactly 6)
        0.f,  0.f, 0.f, -6.f, 0.f,  0.f,     // col 3 outlier (exactly -6); otherwise a zero row
        1.f,  -u, 0.f, 0.5f, -7.5f, 0.5f});  // col 4 outlier (negative)
    const QuantResult r = quantize(X, M, K, 6.f);
    // Row absmax skips only the outlier values themselves (not the whole outlier column).
    // 127/u is 21.18 (F32, F16) or 21.28 (BF16): 1 -> 21, 0.25 -> 5, 0.5 -> 11 for every dtype.
    const std::vector<float> eabsmax = {u, 0.f, u};
    const std::vector<int8_t> eq = {0, 127,  21, 0, 0, 5,
                                    0, 0,    0,  0, 0, 0,
                                    0, -127, 0,  0, 0, 11};
    const std::vector<uint8_t> emask = {1, 0, 0, 1, 1, 0};
    expect_quant_equal(M, K, r.q, r.absmax, r.mask, eq, eabsmax, emask);
  }
}

TEST_P(BackendSuite, QuantizeTiesToEvenExplicit) {
  using namespace llmint8;
  using namespace llmint8::suite;
  // absmax 127/32 = 3.96875 makes 127/absmax = 32 exactly, absmax 63.5 makes it 2: x*inv lands on
  // exact .5 ties, which must round to even. All values are exact in F16 and BF16.
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(testutil::dtype_label(t));
    const int64_t M = 2, K = 8;
    const testutil::HostArray X(t, std::vector<float>{
        3.96875f, 0.078125f, 0.109375f, -0.078125f, -0.109375f, 0.046875f, 0.015625f, -3.96875f,
        63.5f, 0.25f, 0.75f, 1.25f, -1.75f, 31.75f, -31.25f, 0.f});
    // row 0 * 32: 127, 2.5, 3.5, -2.5, -3.5, 1.5, 0.5, -127;  row 1 * 2: 127, .5, 1.5, 2.5, -3.5, 63.5, -62.5, 0
    const std::vector<int8_t> eq = {127, 2, 4, -2, -4, 2, 0, -127,
                                    127, 0, 2, 2, -4, 64, -62, 0};
    const QuantResult r = quantize(X, M, K, 0.f);
    expect_quant_equal(M, K, r.q, r.absmax, r.mask, eq, {3.96875f, 63.5f}, {});
    // The same first row under threshold 6 (nothing reaches it): identical, and no outliers.
    const std::vector<float> xf = X.to_floats();
    const testutil::HostArray X0(t, std::vector<float>(xf.begin(), xf.begin() + K));
    const QuantResult r6 = quantize(X0, 1, K, 6.f);
    expect_quant_equal(1, K, r6.q, r6.absmax, r6.mask, std::vector<int8_t>(eq.begin(), eq.begin() + K),
                       {3.96875f}, std::vector<uint8_t>(size_t(K), 0));
  }
}

TEST_P(BackendSuite, QuantizeZeroAndAllOutlierRows) {
  using namespace llmint8;
  using namespace llmint8::suite;
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(testutil::dtype_label(t));
    const int64_t M = 4, K = 4;
    const testutil::HostArray X(t, std::vector<float>{
        0.f, 0.f, 0.f, 0.f,       // zero row: scale 0, q 0
        -0.f, 0.f, -0.f, 0.f,     // negative zeros: still scale 0
        7.f, -8.f, 6.f, -100.f,   // every value an outlier: scale 0, q 0
        1.f, 2.f, 3.f, 0.5f});    // ordinary values, but every column is an outlier column
    const QuantResult r = quantize(X, M, K, 6.f);
    for (int64_t m = 0; m < 3; ++m) EXPECT_EQ(r.absmax[m], 0.f) << "row " << m;
    EXPECT_EQ(r.absmax[3], 3.f);
    EXPECT_EQ(r.q, std::vector<int8_t>(size_t(M * K), 0));
    EXPECT_EQ(r.mask, std::vector<uint8_t>(size_t(K), 1));
    // Without decomposition the zero rows still give scale 0 and q 0.
    const QuantResult r0 = quantize(X, M, K, 0.f);
    EXPECT_EQ(r0.absmax[0], 0.f);
    EXPECT_EQ(r0.absmax[1], 0.f);
    EXPECT_EQ(r0.absmax[2], 100.f);
    EXPECT_EQ(r0.absmax[3], 3.f);
    for (int64_t k = 0; k < 2 * K; ++k) EXPECT_EQ(r0.q[k], 0) << k;
  }
}

TEST_P(BackendSuite, QuantizeThresholdZeroIsPlainVectorwise) {
  using namespace llmint8;
  using namespace llmint8::suite;
  // threshold 0 = no decomposition: large values are quantized like any other.
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(testutil::dtype_label(t));
    const int64_t M = 2, K = 6;
    const testutil::HostArray X(t, std::vector<float>{
        -127.f, 2.5f, 3.5f, 63.5f, 10.f, 6.f,
        100.f, -50.f, 6.f, 0.f, 1000.f, -1000.f});
    // Row 1: 127/1000 = 0.127f; -50 * 0.127f = -6.35 -> -6, 6 -> 0.76 -> 1, 100 -> 12.7 -> 13.
    const std::vector<int8_t> eq = {-127, 2, 4, 64, 10, 6,
                                    13, -6, 1, 0, 127, -127};
    const QuantResult r = quantize(X, M, K, 0.f);
    expect_quant_equal(M, K, r.q, r.absmax, r.mask, eq, {127.f, 1000.f}, {});
    // A negative threshold also means no decomposition.
    const QuantResult rn = quantize(X, M, K, -1.f);
    expect_quant_equal(M, K, rn.q, rn.absmax, rn.mask, eq, {127.f, 1000.f}, {});
  }
}

TEST_P(BackendSuite, QuantizeNaNAndInfAsDocumented) {
  using namespace llmint8;
  using namespace llmint8::suite;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(testutil::dtype_label(t));
    {
      // threshold 6: NaN is never an outlier, its row gets absmax NaN and q 0; +-Inf is an outlier.
      const int64_t M = 3, K = 3;
      const testutil::HostArray X(t, std::vector<float>{
          1.f, nan, 2.f,
          inf, 0.5f, -1.f,
          0.25f, 1.f, -inf});
      const QuantResult r = quantize(X, M, K, 6.f);
      // row 1: absmax 1 (the -1 in outlier column 2 still counts), 0.5*127 = 63.5 -> 64.
      const std::vector<int8_t> eq = {0, 0, 0,
                                      0, 64, 0,
                                      0, 127, 0};
      expect_quant_equal(M, K, r.q, r.absmax, r.mask, eq, {nan, 1.f, 1.f}, {1, 0, 1});
    }
    {
      // threshold 0: +-Inf makes absmax +Inf and q 0; NaN makes absmax NaN (even beside an Inf).
      const int64_t M = 4, K = 2;
      const testutil::HostArray X(t, std::vector<float>{
          inf, 1.f,
          -inf, 3.f,
          nan, inf,
          2.f, -1.f});
      const QuantResult r = quantize(X, M, K, 0.f);
      const std::vector<int8_t> eq = {0, 0, 0, 0, 0, 0, 127, -64};  // -1 * 63.5 -> -64 (even)
      expect_quant_equal(M, K, r.q, r.absmax, r.mask, eq, {inf, inf, nan, 2.f}, {});
    }
  }
}

// Weights: quantize_rowwise with threshold 0 on fp16 is bitsandbytes' formula as its PyTorch
// backend evaluates it: SCB = float(max |w| in fp16), CB = round_half_even(float(w) * inv) with
// inv = 127.0f * (1.0f / SCB) -- torch computes 127/t as t.reciprocal() * 127, two float roundings.
TEST_P(BackendSuite, WeightQuantFp16MatchesBitsandbytesFormula) {
  using namespace llmint8;
  using namespace llmint8::suite;
  {
    const int64_t N = 4, K = 4;
    const testutil::HostArray W(DType::F16, std::vector<float>{
        // SCB 1.36132812 (fp16): (1/SCB)*127 = 93.2912521f and 0.680664062 * that = 63.5000038
        // -> 64, where a correctly rounded 127/SCB (93.2912445f) would give 63.4999962 -> 63.
        // 0.75 * 93.2912521 = 69.968 -> 70.
        1.36132812f, 0.680664062f, -0.680664062f, 0.75f,
        // SCB 127: inv = 1, ties 2.5 -> 2, -62.5 -> -62, 0.5 -> 0 (not away from zero).
        127.f, 2.5f, -62.5f, 0.5f,
        // zero row: SCB 0, CB 0.
        0.f, -0.f, 0.f, 0.f,
        // SCB from a negative maximum: inv = 32 exactly; 2.5 -> 2, 3.5 -> 4, 1.5 -> 2.
        -3.96875f, 0.078125f, 0.109375f, 0.046875f});
    const QuantResult r = quantize(W, N, K, 0.f);
    const std::vector<int8_t> eCB = {127, 64, -64, 70,
                                     127, 2, -62, 0,
                                     0, 0, 0, 0,
                                     -127, 2, 4, 2};
    expect_quant_equal(N, K, r.q, r.absmax, r.mask, eCB, {to_float(to_f16(1.36132812f)), 127.f, 0.f, 3.96875f}, {});
  }
  {
    // Random fp16 rows (magnitudes from 1e-5 to 10) against the formula written out here.
    testutil::Rng rng(4242);
    const int64_t N = 67, K = 301;
    testutil::HostArray W(DType::F16, size_t(N * K));
    for (int64_t n = 0; n < N; ++n) {
      const double s = std::pow(10.0, rng.uniform(-5.0, 1.0));
      for (int64_t k = 0; k < K; ++k) W.set(size_t(n * K + k), float(s * rng.normal()));
    }
    std::vector<int8_t> eCB(size_t(N * K));
    std::vector<float> eSCB(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) {
      float scb = 0.f;
      for (int64_t k = 0; k < K; ++k) scb = std::max(scb, std::fabs(W.get(size_t(n * K + k))));
      eSCB[n] = scb;
      const volatile float rcp = 1.0f / scb;  // volatile: keep each float rounding step explicit
      const volatile float inv = 127.0f * rcp;
      for (int64_t k = 0; k < K; ++k) {
        const volatile float p = W.get(size_t(n * K + k)) * inv;
        eCB[size_t(n * K + k)] = int8_t(std::nearbyint(float(p)));
      }
    }
    const QuantResult r = quantize(W, N, K, 0.f);
    expect_quant_equal(N, K, r.q, r.absmax, r.mask, eCB, eSCB, {});
  }
}

// ---------------------------------------------------------------------------------------------
// dequantize: against float64.
//
// Bound. The contract computes y = fl(fl(fl(float(C) * fl(ax*aw)) * c) + bias) with
// c = fl(1/16129) (relative error <= u), u = 2^-24, then rounds y to the output dtype. With
// P = |C|*ax*aw/16129 and B = |bias|: at most 5 relative roundings reach the product term and one
// the sum, so |y - Y64| <= 5.0001u*P + u*(P*(1+6u) + B). We allow 8u*P + 2u*B so that any evaluation
// order or fused multiply-add is covered. Rounding to the output dtype adds u_io*|y| + a_io
// (u_io = 2^-11 F16, 2^-8 BF16; a_io = half the subnormal spacing).

namespace llmint8::suite {
struct DequantBound {
  static double bound(DType t, double P, double B, double Y64) {
    const double u = 0x1.0p-24;
    const double bf = 8 * u * P + 2 * u * B;
    return bf + testutil::unit_roundoff(t) * (std::fabs(Y64) + bf) + testutil::subnormal_half_spacing(t);
  }
};
}  // namespace llmint8::suite

TEST_P(BackendSuite, DequantizeWithinFloat64Bound) {
  using namespace llmint8;
  using namespace llmint8::suite;
  testutil::Rng rng(9001);
  struct Shape { int64_t M, N; };
  const Shape shapes[] = {{1, 1}, {1, 257}, {7, 31}, {64, 3}, {129, 65}};
  for (DType t : kFloatTypes) {
    double max_ratio = 0.0;
    bool wrong_scale_caught = false, wrong_bias_caught = false;
    for (const Shape s : shapes)
      for (int with_bias = 0; with_bias < 2; ++with_bias) {
        SCOPED_TRACE(::testing::Message() << testutil::dtype_label(t) << " M=" << s.M << " N=" << s.N
                                          << " bias=" << with_bias);
        std::vector<int32_t> C(size_t(s.M * s.N));
        // Accumulators as a K=4096 GEMM can produce them, including |C| > 2^24 (inexact in float).
        for (auto& c : C) c = int32_t(rng.integer(-66000000, 66000000) >> rng.integer(0, 20));
        std::vector<float> ax(static_cast<size_t>(s.M)), aw(static_cast<size_t>(s.N)), bias(static_cast<size_t>(s.N));
        for (auto& a : ax) a = rng.chance(0.05) ? 0.f : float(rng.uniform(0.1, 8.0));
        for (auto& a : aw) a = float(rng.uniform(0.005, 0.2));
        for (auto& b : bias) b = float(rng.normal());
        DeviceBuffer<int32_t> dC(backend(), C);
        DeviceBuffer<float> dax(backend(), ax), daw(backend(), aw), db(backend(), bias);
        DeviceArray dY(backend(), t, size_t(s.M * s.N));
        backend().dequantize(s.M, s.N, dC.get(), dax.get(), daw.get(), with_bias ? db.get() : nullptr, t, dY.get());
        const testutil::HostArray Y = dY.download();
        int reported = 0;
        for (int64_t m = 0; m < s.M; ++m)
          for (int64_t n = 0; n < s.N; ++n) {
            const size_t i = size_t(m * s.N + n);
            const double P = double(C[i]) * double(ax[m]) * double(aw[n]) / 16129.0;
            const double B = with_bias ? double(bias[n]) : 0.0;
            const double Y64 = P + B;
            const double bound = DequantBound::bound(t, std::fabs(P), std::fabs(B), Y64);
            const double err = std::fabs(double(Y.get(i)) - Y64);
            if (!(err <= bound) && reported++ < 5)
              ADD_FAILURE() << "Y[" << m << "," << n << "] = " << Y.get(i) << ", float64 " << Y64
                            << ", error " << err << " > bound " << bound;
            if (bound > 0) max_ratio = std::max(max_ratio, err / bound);
            // The bound must reject a wrong dequantization constant (1/16384) and a dropped bias.
            const double wrong_scale = double(C[i]) * double(ax[m]) * double(aw[n]) / 16384.0 + B;
            if (std::fabs(wrong_scale - Y64) > bound) wrong_scale_caught = true;
            if (with_bias && std::fabs(P - Y64) > bound) wrong_bias_caught = true;
          }
      }
    EXPECT_TRUE(wrong_scale_caught) << testutil::dtype_label(t);
    EXPECT_TRUE(wrong_bias_caught) << testutil::dtype_label(t);
    // Not vacuous: the observed error reaches a visible fraction of the bound.
    EXPECT_GE(max_ratio, 0.01) << testutil::dtype_label(t);
    std::printf("[ dequantize %s ] max |Y - Y64| / bound = %.3f\n", testutil::dtype_label(t), max_ratio);
  }
}

// ---------------------------------------------------------------------------------------------
// int8_linear: against float64, and against the reference.
//
// Bound (per output element, from the reference's own quantization of X: row scale sx, outlier set
// O; and of W: CB, SCB = sw). q = round(fl(x * fl(127/s))) is within 1/2 + 127*2u of 127x/s, so
// the dequantized values x^ = q*sx/127, w^ = CB*sw/127 satisfy |x - x^| <= ex = sx*(1/254 + 2.0001u),
// |w - w^| <= ew = sw*(1/254 + 2.0001u). Since x*w - x^*w^ = x*(w - w^) + (x - x^)*w^:
//   quantization:  sum_{k not in O} |x_k|*ew + ex*|w^_k|
//   outliers:      sum_{k in O} |x_k|*(ew + |w^_k|*(u_io + 4u) + a_io)  -- x_k exact, the weight is
//                  w^ computed in float and rounded to the io dtype
//   arithmetic:    (|O| + 10)*u * (sum_{k not in O} |x^_k w^_k| + sum_{k in O} |x_k w^_k|*(1+u_io) + |b|)
//                  -- the dequantization roundings, the float sum of |O| outlier products in any
//                  order, and the two additions of the parts and the bias
//   output:        u_io * (|Y64| + all the above) + a_io
// The quantization terms dominate; the rest is what float and the 16-bit output add.

namespace llmint8::suite {

struct LinearProblem {
  DType t;
  int64_t M, N, K;
  float threshold;
  testutil::HostArray X, W;  // io dtype
  std::vector<float> bias;   // empty = none
};

struct LinearBounds {
  std::vector<double> Y64, bound, scale;  // scale: the magnitude the arithmetic terms scale with
};

inline LinearBounds linear_bounds(const LinearProblem& p, const std::vector<int8_t>& CB,
                                  const std::vector<float>& SCB, float threshold) {
  const double u = 0x1.0p-24, uio = testutil::unit_roundoff(p.t), aio = testutil::subnormal_half_spacing(p.t);
  std::vector<int8_t> qx(size_t(p.M * p.K));
  std::vector<float> sx(static_cast<size_t>(p.M));
  std::vector<uint8_t> mask(static_cast<size_t>(p.K));
  testutil::ref_quantize_rowwise(p.X, p.M, p.K, threshold, qx.data(), sx.data(), threshold > 0.f ? mask.data() : nullptr);
  const std::vector<float> xf = p.X.to_floats(), wf = p.W.to_floats();
  LinearBounds r;
  r.Y64 = testutil::matmul_f64(xf, wf, p.bias.empty() ? nullptr : p.bias.data(), p.M, p.N, p.K);
  r.bound.resize(r.Y64.size());
  r.scale.resize(r.Y64.size());
  int64_t n_out = 0;
  for (uint8_t b : mask) n_out += b ? 1 : 0;
  for (int64_t m = 0; m < p.M; ++m) {
    const double ex = double(sx[m]) * (1.0 / 254 + 2.0001 * u);
    for (int64_t n = 0; n < p.N; ++n) {
      const double ew = double(SCB[n]) * (1.0 / 254 + 2.0001 * u);
      double quant = 0, outl = 0, mag = p.bias.empty() ? 0.0 : std::fabs(double(p.bias[n]));
      for (int64_t k = 0; k < p.K; ++k) {
        const double x = std::fabs(double(xf[m * p.K + k]));
        const double wh = std::fabs(double(CB[n * p.K + k]) * double(SCB[n]) / 127.0);
        if (mask[k]) {
          outl += x * (ew + wh * (uio + 4 * u) + aio);
          mag += x * wh * (1 + uio + 4 * u);
        } else {
          quant += x * ew + ex * wh;
          mag += std::fabs(double(qx[m * p.K + k]) * double(sx[m]) / 127.0) * wh;
        }
      }
      const double arith = double(n_out + 10) * u * mag;
      const size_t i = size_t(m * p.N + n);
      const double pre = quant + outl + arith;
      r.bound[i] = pre + uio * (std::fabs(r.Y64[i]) + pre) + aio;
      r.scale[i] = mag;
    }
  }
  return r;
}

// Activations ~ N(0, sigma) with planted outlier columns (some rows, magnitudes 6-40, one exactly
// at the threshold); weights ~ N(0, wsigma). Row 1 is zero (M >= 4); row 2 all outliers on request.
inline LinearProblem make_linear_problem(testutil::Rng& rng, DType t, int64_t M, int64_t N, int64_t K,
                                         float threshold, bool with_bias, bool special_rows) {
  LinearProblem p{t, M, N, K, threshold, testutil::HostArray(t, size_t(M * K)), testutil::HostArray(t, size_t(N * K)), {}};
  for (size_t i = 0; i < p.X.size(); ++i) p.X.set(i, float(rng.normal()));
  const double wsigma = rng.uniform(0.01, 0.1);
  for (size_t i = 0; i < p.W.size(); ++i) p.W.set(i, float(wsigma * rng.normal()));
  const int64_t n_cols = K >= 8 ? std::max<int64_t>(1, K / 64) : (rng.chance(0.5) ? 1 : 0);
  for (int64_t j = 0; j < n_cols; ++j) {
    const int64_t k = rng.integer(0, K - 1);
    for (int64_t m = 0; m < M; ++m)
      if (m == 0 || rng.chance(0.3)) p.X.set(size_t(m * K + k), float((rng.chance(0.5) ? -1 : 1) * rng.uniform(6.0, 40.0)));
    if (j == 0) p.X.set(size_t(k), 6.f);  // exactly at the (default) threshold
  }
  if (M >= 4) for (int64_t k = 0; k < K; ++k) p.X.set(size_t(1 * K + k), 0.f);  // zero row
  // A row of outliers only makes every column an outlier column (no int8 part left): opt-in.
  if (special_rows && M >= 4)
    for (int64_t k = 0; k < K; ++k) p.X.set(size_t(2 * K + k), k % 2 ? -9.f : 12.f);
  if (with_bias) {
    p.bias.resize(static_cast<size_t>(N));
    for (auto& b : p.bias) b = float(rng.normal());
  }
  return p;
}

}  // namespace llmint8::suite

TEST_P(BackendSuite, Int8LinearWithinFloat64Bound) {
  using namespace llmint8;
  using namespace llmint8::suite;
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{1, 1, 1}, {1, 3, 64}, {2, 31, 65}, {4, 257, 255}, {16, 33, 1000},
                          {17, 8, 3}, {64, 16, 128}, {7, 5, 1}, {129, 40, 257}};
  testutil::Rng rng(31337);
  for (DType t : kFloatTypes) {
    double max_ratio = 0.0;
    bool no_decomp_caught = false, dropped_outliers_caught = false;
    for (const Shape s : shapes)
      for (float th : {0.f, 6.f})
        for (int with_bias = 0; with_bias < 2; ++with_bias) {
          SCOPED_TRACE(::testing::Message() << testutil::dtype_label(t) << " M=" << s.M << " N=" << s.N
                                            << " K=" << s.K << " threshold=" << th << " bias=" << with_bias);
          const LinearProblem p = make_linear_problem(rng, t, s.M, s.N, s.K, th, with_bias, s.M == 17);
          // Weights quantized on the host by the reference (bit-identical to every backend's,
          // see the quantize tests), then uploaded.
          std::vector<int8_t> CB(size_t(s.N * s.K));
          std::vector<float> SCB(static_cast<size_t>(s.N));
          testutil::ref_quantize_rowwise(p.W, s.N, s.K, 0.f, CB.data(), SCB.data(), nullptr);
          DeviceBuffer<int8_t> dCB(backend(), CB);
          DeviceBuffer<float> dSCB(backend(), SCB);
          DeviceBuffer<float> dbias(backend(), p.bias);
          DeviceArray dX(backend(), p.X);
          DeviceArray dY(backend(), t, size_t(s.M * s.N));
          const Int8Weight W{s.N, s.K, dCB.get(), dSCB.get()};
          const float* bias_ptr = with_bias ? dbias.get() : nullptr;
          backend().int8_linear(W, t, dX.get(), s.M, th, bias_ptr, dY.get());
          const testutil::HostArray Y = dY.download();

          // The reference on the host, for the agreement check.
          testutil::HostArray Yref(t, size_t(s.M * s.N));
          const Int8Weight Wh{s.N, s.K, CB.data(), SCB.data()};
          testutil::ref_int8_linear(Wh, p.X, s.M, th, with_bias ? p.bias.data() : nullptr, Yref);

          const LinearBounds b = linear_bounds(p, CB, SCB, th);
          const double u = 0x1.0p-24, uio = testutil::unit_roundoff(t), aio = testutil::subnormal_half_spacing(t);
          int reported = 0;
          for (size_t i = 0; i < Y.size(); ++i) {
            const double y = Y.get(i), err = std::fabs(y - b.Y64[i]);
            if (!(err <= b.bound[i]) && reported++ < 5)
              ADD_FAILURE() << "Y[" << i / size_t(s.N) << "," << i % size_t(s.N) << "] = " << y << ", float64 "
                            << b.Y64[i] << ", error " << err << " > bound " << b.bound[i];
            max_ratio = std::max(max_ratio, err / b.bound[i]);
            // Agreement with the reference: only float evaluation order and the final rounding
            // may differ (each side's float part is within (K + 10)u * scale of exact).
            const double yr = Yref.get(i);
            const double tol = uio * (std::fabs(y) + std::fabs(yr)) + 2 * aio + 2 * double(s.K + 10) * u * b.scale[i];
            if (!(std::fabs(y - yr) <= tol) && reported++ < 5)
              ADD_FAILURE() << "Y[" << i << "] = " << y << " but the reference gives " << yr << " (tol " << tol << ")";
          }
          if (th > 0.f) {
            // A backend ignoring the threshold (plain vector-wise int8) would break this bound.
            testutil::HostArray Yvw(t, size_t(s.M * s.N));
            testutil::ref_int8_linear(Wh, p.X, s.M, 0.f, with_bias ? p.bias.data() : nullptr, Yvw);
            // ... and so would one that forgets the 16-bit outlier product.
            std::vector<int8_t> qx(size_t(s.M * s.K));
            std::vector<float> sx(static_cast<size_t>(s.M));
            std::vector<uint8_t> mask(static_cast<size_t>(s.K));
            testutil::ref_quantize_rowwise(p.X, s.M, s.K, th, qx.data(), sx.data(), mask.data());
            std::vector<int32_t> acc(size_t(s.M * s.N));
            ref::gemm_s8s8s32(s.M, s.N, s.K, qx.data(), CB.data(), acc.data());
            for (size_t i = 0; i < Y.size(); ++i) {
              if (std::fabs(Yvw.get(i) - b.Y64[i]) > b.bound[i]) no_decomp_caught = true;
              const size_t m = i / size_t(s.N), n = i % size_t(s.N);
              double y_int_only = double(acc[i]) * sx[m] * SCB[n] / 16129.0 + (with_bias ? p.bias[n] : 0.0);
              if (std::fabs(y_int_only - b.Y64[i]) > b.bound[i]) dropped_outliers_caught = true;
            }
          }
          if (HasFailure()) return;
        }
    EXPECT_TRUE(no_decomp_caught) << testutil::dtype_label(t);
    EXPECT_TRUE(dropped_outliers_caught) << testutil::dtype_label(t);
    EXPECT_GE(max_ratio, 0.01) << testutil::dtype_label(t) << ": the bound is vacuous";
    std::printf("[ int8_linear %s ] max |Y - Y64| / bound = %.3f\n", testutil::dtype_label(t), max_ratio);
  }
}

TEST_P(BackendSuite, Int8LinearNonFiniteInputs) {
  using namespace llmint8;
  using namespace llmint8::suite;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  testutil::Rng rng(5);
  const int64_t M = 4, N = 9, K = 70;
  for (DType t : kFloatTypes)
    for (float th : {0.f, 6.f}) {
      SCOPED_TRACE(::testing::Message() << testutil::dtype_label(t) << " threshold=" << th);
      LinearProblem p = make_linear_problem(rng, t, M, N, K, th, false, false);
      for (int64_t k = 0; k < K; ++k) p.X.set(size_t(1 * K + k), float(rng.normal()));  // no zero row
      for (int64_t k = 0; k < K; ++k) p.X.set(size_t(2 * K + k), float(rng.normal()));  // nor all-outlier
      p.X.set(size_t(1 * K + 5), nan);   // row 1: NaN -> every output of the row NaN
      p.X.set(size_t(2 * K + 9), -inf);  // row 2: -Inf -> every output of the row non-finite
      std::vector<int8_t> CB(size_t(N * K));
      std::vector<float> SCB(static_cast<size_t>(N));
      testutil::ref_quantize_rowwise(p.W, N, K, 0.f, CB.data(), SCB.data(), nullptr);
      DeviceBuffer<int8_t> dCB(backend(), CB);
      DeviceBuffer<float> dSCB(backend(), SCB);
      DeviceArray dX(backend(), p.X);
      DeviceArray dY(backend(), t, size_t(M * N));
      backend().int8_linear(Int8Weight{N, K, dCB.get(), dSCB.get()}, t, dX.get(), M, th, nullptr, dY.get());
      const testutil::HostArray Y = dY.download();
      testutil::HostArray Yref(t, size_t(M * N));
      testutil::ref_int8_linear(Int8Weight{N, K, CB.data(), SCB.data()}, p.X, M, th, nullptr, Yref);
      const LinearBounds b = linear_bounds(p, CB, SCB, th);
      const double u = 0x1.0p-24, uio = testutil::unit_roundoff(t), aio = testutil::subnormal_half_spacing(t);
      for (int64_t n = 0; n < N; ++n) {
        EXPECT_TRUE(std::isnan(Y.get(size_t(1 * N + n)))) << "NaN row, n=" << n << ": " << Y.get(size_t(N + n));
        EXPECT_FALSE(std::isfinite(Y.get(size_t(2 * N + n)))) << "Inf row, n=" << n;
        // The other rows are unaffected: finite and as the reference computes them.
        for (int64_t m : {0, 3}) {
          const size_t i = size_t(m * N + n);
          const double y = Y.get(i), yr = Yref.get(i);
          const double tol = uio * (std::fabs(y) + std::fabs(yr)) + 2 * aio + 2 * double(K + 10) * u * b.scale[i];
          EXPECT_TRUE(std::isfinite(y)) << "finite row " << m << " n=" << n;
          EXPECT_LE(std::fabs(y - yr), tol) << "row " << m << " n=" << n << ": " << y << " vs reference " << yr;
        }
      }
    }
}

TEST_P(BackendSuite, RejectsUnsupportedDTypes) {
  using namespace llmint8;
  using namespace llmint8::suite;
  DeviceBuffer<uint8_t> X(backend(), 64), Y(backend(), 64);
  DeviceBuffer<int8_t> Q(backend(), 64);
  DeviceBuffer<float> a(backend(), 8);
  DeviceBuffer<int32_t> C(backend(), 16);
  EXPECT_THROW(backend().quantize_rowwise(DType::I8, X.get(), 2, 2, 0.f, Q.get(), a.get(), nullptr), Error);
  EXPECT_THROW(backend().quantize_rowwise(DType::F64, X.get(), 2, 2, 0.f, Q.get(), a.get(), nullptr), Error);
  EXPECT_THROW(backend().dequantize(2, 2, C.get(), a.get(), a.get(), nullptr, DType::I32, Y.get()), Error);
  EXPECT_THROW(backend().int8_linear(Int8Weight{2, 2, Q.get(), a.get()}, DType::I64, X.get(), 2, 0.f, nullptr, Y.get()),
               Error);
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BackendSuite);

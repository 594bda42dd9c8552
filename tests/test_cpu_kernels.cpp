// Edge cases of the CPU backend's kernels, for every kernel tier this CPU can run (scalar, AVX2,
// AVX-512 VNNI, AMX-INT8): tile remainders in M, N and K, the decode / packed GEMM paths, the full int8
// range including -128, huge K, and the quantizer's special values. Everything is compared with
// src/quant/reference.cpp bit for bit (the CPU backend keeps the reference's float operation
// order, so even the float outputs are identical).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/cpu_backend.h"
#include "llmint8/error.h"
#include "quant/reference.h"

using namespace llmint8;
using cpu::Isa;

namespace {

std::vector<Isa> tiers() { return {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx}; }

class CpuKernels : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu::isa_supported(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu::isa_name(GetParam());
    be_ = cpu::make_cpu_backend_isa(2, GetParam());
  }
  std::unique_ptr<Backend> be_;
};

std::vector<int8_t> random_i8(size_t n, std::mt19937& rng, int lo = -128, int hi = 127) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(d(rng));
  return v;
}

void check_gemm(Backend& be, int64_t M, int64_t N, int64_t K, const std::vector<int8_t>& A,
                const std::vector<int8_t>& B) {
  std::vector<int32_t> got(size_t(M * N), 12345), want(static_cast<size_t>(M * N));
  be.gemm_s8s8s32(M, N, K, A.data(), B.data(), got.data());
  ref::gemm_s8s8s32(M, N, K, A.data(), B.data(), want.data());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], want[i]) << "M=" << M << " N=" << N << " K=" << K << " at m=" << i / size_t(N)
                               << " n=" << i % size_t(N);
}

TEST_P(CpuKernels, GemmOddShapesExact) {
  std::mt19937 rng(1);
  // M covers the decode tiles (1..17) and the packed 8-row tiles with remainders (32..130);
  // K covers K=1, non-multiples of 4 and 64, and more than one 512-wide K block; N odd and
  // around the 4-, 48- and 64-wide tiles.
  const int64_t Ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 100, 130};
  const int64_t Ks[] = {1, 3, 4, 63, 64, 65, 100, 513, 1100};
  const int64_t Ns[] = {1, 3, 47, 49, 97};
  for (int64_t M : Ms)
    for (int64_t K : Ks)
      for (int64_t N : Ns) {
        if (M * N * K > 4'000'000) continue;
        const auto A = random_i8(size_t(M * K), rng), B = random_i8(size_t(N * K), rng);
        check_gemm(*be_, M, N, K, A, B);
      }
}

TEST_P(CpuKernels, GemmExtremeValuesAndLargeK) {
  // All -128 x -128 over K = 65536 gives 2^30: exact, no int32 overflow; +-127 mixes too.
  for (int64_t M : {int64_t(2), int64_t(40)}) {
    const int64_t N = 3, K = 65536;
    std::vector<int8_t> A(size_t(M * K), -128), B(size_t(N * K), -128);
    check_gemm(*be_, M, N, K, A, B);
    for (size_t i = 0; i < B.size(); ++i) B[i] = (i % 3) ? 127 : -127;
    for (size_t i = 0; i < A.size(); ++i) A[i] = (i % 5) ? -128 : 127;
    check_gemm(*be_, M, N, K, A, B);
  }
}

TEST_P(CpuKernels, GemmZeroK) {
  std::vector<int8_t> A(4), B(4);
  std::vector<int32_t> C(6, 7);
  be_->gemm_s8s8s32(2, 3, 0, A.data(), B.data(), C.data());
  for (int32_t c : C) EXPECT_EQ(c, 0);
  for (int64_t M : {int64_t(1), int64_t(40)}) {
    std::vector<int8_t> a(static_cast<size_t>(M)), b(3);
    std::vector<int32_t> c(size_t(M * 3), 7);
    be_->gemm_s8s8s32(M, 3, 0, a.data(), b.data(), c.data());
    for (int32_t v : c) EXPECT_EQ(v, 0);
  }
}

template <class T>
std::vector<T> to_dtype(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = from_float<T>(x[i]);
  return y;
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, 4) == 0;
}

// Random activations with planted outlier columns, an all-zero row, a row with NaN and a row
// with +-Inf (when there are enough rows).
std::vector<float> activations(int64_t M, int64_t K, std::mt19937& rng, bool specials) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (auto& v : x) v = nd(rng);
  for (int64_t k = 0; k < K; k += 37) x[size_t((k % M) * K + k)] = (k & 1) ? 9.5f : -20.f;
  if (specials && M >= 4) {
    for (int64_t k = 0; k < K; ++k) x[size_t(1 * K + k)] = 0.f;
    x[size_t(2 * K + K / 2)] = std::numeric_limits<float>::quiet_NaN();
    x[size_t(3 * K + K / 3)] = std::numeric_limits<float>::infinity();
    x[size_t(3 * K + (K - 1))] = -std::numeric_limits<float>::infinity();
  }
  return x;
}

template <class T>
void check_quantize(Backend& be, int64_t M, int64_t K, float threshold, bool specials, bool with_mask) {
  std::mt19937 rng(uint32_t(M * 131 + K));
  const auto X = to_dtype<T>(activations(M, K, rng, specials));
  std::vector<int8_t> q(size_t(M * K), 99), rq(static_cast<size_t>(M * K));
  std::vector<float> a(size_t(M), -1.f), ra(static_cast<size_t>(M));
  std::vector<uint8_t> oc(size_t(K), 7), roc(static_cast<size_t>(K));
  be.quantize_rowwise(dtype_of<T>(), X.data(), M, K, threshold, q.data(), a.data(),
                      with_mask ? oc.data() : nullptr);
  ref::quantize_rowwise(X.data(), M, K, threshold, rq.data(), ra.data(), with_mask ? roc.data() : nullptr);
  const std::string where = "M=" + std::to_string(M) + " K=" + std::to_string(K) +
                            " threshold=" + std::to_string(threshold);
  for (int64_t m = 0; m < M; ++m) ASSERT_TRUE(same_float(a[size_t(m)], ra[size_t(m)])) << where << " row " << m;
  ASSERT_EQ(q, rq) << where;
  if (with_mask) {
    ASSERT_EQ(oc, roc) << where;
  }
}

template <class T>
void quantize_suite(Backend& be) {
  const int64_t Ms[] = {1, 5, 70};
  const int64_t Ks[] = {1, 15, 16, 17, 100, 1000};
  for (int64_t M : Ms)
    for (int64_t K : Ks)
      for (float th : {0.f, 6.f})
        for (bool specials : {false, true})
          for (bool mask : {true, false}) {
            check_quantize<T>(be, M, K, th, specials, mask);
          }
}

TEST_P(CpuKernels, QuantizeF32) { quantize_suite<float>(*be_); }
TEST_P(CpuKernels, QuantizeF16) { quantize_suite<f16>(*be_); }
TEST_P(CpuKernels, QuantizeBF16) { quantize_suite<bf16>(*be_); }

TEST_P(CpuKernels, QuantizeTiesAndTinyAbsmax) {
  // x * 127/absmax landing on .5 must round to even; a subnormal absmax makes 127/absmax = Inf.
  const int64_t K = 40;
  std::vector<float> x(static_cast<size_t>(2 * K));
  for (int64_t k = 0; k < K; ++k) x[size_t(k)] = (float(k) - 20.f) + 0.5f;  // absmax 19.5
  x[size_t(K - 1)] = 127.f;  // absmax 127 -> scale 1, the ties stay ties
  for (int64_t k = 0; k < K; ++k) x[size_t(K + k)] = (k % 3 == 0) ? 1e-40f : (k % 3 == 1 ? -1e-40f : 0.f);
  std::vector<int8_t> q(x.size()), rq(x.size());
  std::vector<float> a(2), ra(2);
  be_->quantize_rowwise(DType::F32, x.data(), 2, K, 0.f, q.data(), a.data(), nullptr);
  ref::quantize_rowwise(x.data(), 2, K, 0.f, rq.data(), ra.data(), nullptr);
  EXPECT_EQ(q, rq);
  EXPECT_EQ(a, ra);
}

template <class T>
void check_dequantize(Backend& be, int64_t M, int64_t N, bool bias) {
  std::mt19937 rng(uint32_t(M + 7 * N));
  std::uniform_int_distribution<int32_t> d(-2'000'000, 2'000'000);
  std::uniform_real_distribution<float> u(0.01f, 8.f);
  std::vector<int32_t> C(static_cast<size_t>(M * N));
  for (auto& c : C) c = d(rng);
  std::vector<float> ax(static_cast<size_t>(M)), aw(static_cast<size_t>(N)), b(static_cast<size_t>(N));
  for (auto& v : ax) v = u(rng);
  for (auto& v : aw) v = u(rng);
  for (auto& v : b) v = u(rng) - 4.f;
  ax[0] = std::numeric_limits<float>::quiet_NaN();  // a NaN row stays NaN
  std::vector<T> y(static_cast<size_t>(M * N)), ry(static_cast<size_t>(M * N));
  be.dequantize(M, N, C.data(), ax.data(), aw.data(), bias ? b.data() : nullptr, dtype_of<T>(), y.data());
  ref::dequantize(M, N, C.data(), ax.data(), aw.data(), bias ? b.data() : nullptr, ry.data());
  ASSERT_EQ(std::memcmp(y.data(), ry.data(), y.size() * sizeof(T)), 0) << "M=" << M << " N=" << N;
}

TEST_P(CpuKernels, DequantizeExact) {
  for (int64_t M : {int64_t(1), int64_t(3), int64_t(300)})
    for (int64_t N : {int64_t(1), int64_t(17), int64_t(333)})
      for (bool bias : {false, true}) {
        check_dequantize<float>(*be_, M, N, bias);
        check_dequantize<f16>(*be_, M, N, bias);
        check_dequantize<bf16>(*be_, M, N, bias);
      }
}

template <class T>
void check_linear(Backend& be, int64_t M, int64_t N, int64_t K, float threshold, bool bias) {
  std::mt19937 rng(uint32_t(M * 1000 + N * 10 + K));
  const auto X = to_dtype<T>(activations(M, K, rng, /*specials=*/false));
  std::normal_distribution<float> nd(0.f, 0.05f);
  std::vector<float> w(static_cast<size_t>(N * K));
  for (auto& v : w) v = nd(rng);
  const auto wt = to_dtype<T>(w);
  std::vector<int8_t> CB(w.size());
  std::vector<float> SCB(static_cast<size_t>(N)), b(static_cast<size_t>(N));
  ref::quantize_rowwise(wt.data(), N, K, 0.f, CB.data(), SCB.data(), nullptr);
  for (auto& v : b) v = nd(rng);
  Int8Weight W{N, K, CB.data(), SCB.data()};
  std::vector<T> y(static_cast<size_t>(M * N)), ry(static_cast<size_t>(M * N));
  be.int8_linear(W, dtype_of<T>(), X.data(), M, threshold, bias ? b.data() : nullptr, y.data());
  ref::int8_linear(W, X.data(), M, threshold, bias ? b.data() : nullptr, ry.data());
  for (size_t i = 0; i < y.size(); ++i)
    ASSERT_TRUE(same_float(to_float(y[i]), to_float(ry[i])))
        << "M=" << M << " N=" << N << " K=" << K << " th=" << threshold << " at " << i << ": "
        << to_float(y[i]) << " vs " << to_float(ry[i]);
}

TEST_P(CpuKernels, Int8LinearMatchesReference) {
  for (int64_t M : {int64_t(1), int64_t(3), int64_t(17), int64_t(33), int64_t(70)})
    for (float th : {0.f, 6.f})
      for (bool bias : {false, true}) {
        check_linear<float>(*be_, M, 101, 130, th, bias);
        check_linear<f16>(*be_, M, 49, 600, th, bias);
        check_linear<bf16>(*be_, M, 65, 64, th, bias);
      }
}

TEST_P(CpuKernels, BadArgumentsThrow) {
  std::vector<int8_t> a(4);
  std::vector<int32_t> c(4);
  EXPECT_THROW(be_->gemm_s8s8s32(-1, 2, 2, a.data(), a.data(), c.data()), Error);
  EXPECT_THROW(be_->gemm_s8s8s32(2, 2, 2, nullptr, a.data(), c.data()), Error);
}

INSTANTIATE_TEST_SUITE_P(Tiers, CpuKernels, ::testing::ValuesIn(tiers()),
                         [](const auto& info) { return std::string(cpu::isa_name(info.param)); });

// Sets an environment variable for one scope, restoring the old value afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) { had_ = true; old_ = old; }
    if (value) setenv(name, value, 1); else unsetenv(name);
  }
  ~ScopedEnv() { if (had_) setenv(name_, old_.c_str(), 1); else unsetenv(name_); }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(CpuBackend, DefaultPicksBestTier) {
  ScopedEnv env("LLMINT8_CPU_ISA", nullptr);
  auto be = make_cpu_backend(1);
  EXPECT_EQ(be->name(), std::string("cpu-") + cpu::isa_name(cpu::detect_isa()));
}

TEST(CpuBackend, EnvironmentPinsTier) {
  {
    ScopedEnv env("LLMINT8_CPU_ISA", "scalar");
    EXPECT_EQ(make_cpu_backend(1)->name(), "cpu-scalar");
  }
  ScopedEnv env("LLMINT8_CPU_ISA", "avx9000");
  EXPECT_THROW(make_cpu_backend(1), Error);
}

}  // namespace

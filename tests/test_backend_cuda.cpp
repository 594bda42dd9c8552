// The CUDA backend against the scalar reference (src/quant/reference.h): quantize, the int32 GEMM,
// dequantize and int8_linear all bit-identical to the reference (the kernels use the same float
// operations in the same order; a relative-error check reports the size of any miss), F32/F16/BF16,
// odd shapes (M=1, K=1, K=63, odd N), both int8_linear paths (decode M<=16 and the GEMM path),
// NaN/Inf rows, and replay of a captured CUDA graph. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "llmint8/backend.h"
#include "llmint8/error.h"
#include "model/linear.h"
#include "quant/reference.h"

#if defined(LLMINT8_HAVE_CUDA)
#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"
#endif

namespace llmint8 {
namespace {

class CudaBackendTest : public ::testing::Test {
 public:  // the typed check_* helpers below use the buffers
  void SetUp() override {
    be_ = make_cuda_backend(0);
    if (!be_) GTEST_SKIP() << "no CUDA device (or built without CUDA): CUDA backend tests skipped";
  }
  // Device buffer holding `v`.
  template <class T> T* up(const std::vector<T>& v) {
    T* p = static_cast<T*>(be_->alloc(v.size() * sizeof(T) + 16));
    bufs_.push_back(p);
    be_->to_device(p, v.data(), v.size() * sizeof(T));
    return p;
  }
  template <class T> T* dev(size_t n) {
    T* p = static_cast<T*>(be_->alloc(n * sizeof(T) + 16));
    bufs_.push_back(p);
    return p;
  }
  template <class T> std::vector<T> down(const T* p, size_t n) {
    std::vector<T> v(n);
    be_->to_host(v.data(), p, n * sizeof(T));
    return v;
  }
  void TearDown() override {
    if (be_)
      for (void* p : bufs_) be_->release(p);
  }
  std::unique_ptr<Backend> be_;
  std::vector<void*> bufs_;
};

// Activations: normal values, with `n_out` outlier columns (|x| >= 6 in a few rows).
template <class T>
std::vector<T> make_x(int64_t M, int64_t K, int n_out, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> x(size_t(M * K));
  for (auto& v : x) v = from_float<T>(std::fmax(-5.5f, std::fmin(5.5f, nd(rng))));
  std::uniform_int_distribution<int64_t> col(0, K - 1), row(0, M - 1);
  for (int i = 0; i < n_out; ++i) {
    const int64_t k = col(rng);
    for (int r = 0; r < 1 + int(M / 8); ++r) x[size_t(row(rng) * K + k)] = from_float<T>(i % 2 ? 9.5f : -7.25f);
  }
  return x;
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || float_to_bits(a) == float_to_bits(b);
}

template <class T>
void check_quantize(CudaBackendTest* t, int64_t M, int64_t K, float th, bool specials, int n_out = 3) {
  std::mt19937 rng(unsigned(M * 131 + K * 7 + int(th)));
  auto x = make_x<T>(M, K, n_out, rng);
  if (specials && M >= 4) {
    x[size_t(1 * K + K / 2)] = from_float<T>(NAN);                      // NaN row
    for (int64_t k = 0; k < K; ++k) x[size_t(2 * K + k)] = from_float<T>(0.f);  // zero row
    x[size_t(3 * K)] = from_float<T>(INFINITY);                         // Inf: outlier or absmax Inf
  }
  std::vector<int8_t> q_ref(static_cast<size_t>(M * K));
  std::vector<float> a_ref(static_cast<size_t>(M));
  std::vector<uint8_t> o_ref(static_cast<size_t>(K));
  ref::quantize_rowwise(x.data(), M, K, th, q_ref.data(), a_ref.data(), o_ref.data());

  const T* dx = t->up(x);
  auto* dq = t->dev<int8_t>(size_t(M * K));
  auto* da = t->dev<float>(size_t(M));
  auto* dm = t->dev<uint8_t>(size_t(K));
  // Twice: the second call checks that the backend's internal state was reset by the first.
  for (int rep = 0; rep < 2; ++rep) {
    t->be_->quantize_rowwise(dtype_of<T>(), dx, M, K, th, dq, da, dm);
    const auto q = t->down(dq, size_t(M * K));
    const auto a = t->down(da, size_t(M));
    const auto o = t->down(dm, size_t(K));
    int64_t nd = 0, first = -1;
    for (size_t i = 0; i < q.size(); ++i)
      if (q[i] != q_ref[i] && nd++ == 0) first = int64_t(i);
    if (nd) {
      const int64_t m = first / K, k = first % K;
      std::printf("  %lld Q elements differ; first m=%lld k=%lld x=%.9g q=%d ref=%d absmax %.9g ref %.9g\n",
                  (long long)nd, (long long)m, (long long)k, to_float(x[size_t(first)]), q[size_t(first)],
                  q_ref[size_t(first)], a[size_t(m)], a_ref[size_t(m)]);
    }
    ASSERT_EQ(nd, 0) << "Q differs, M=" << M << " K=" << K << " th=" << th << " dtype " << int(dtype_of<T>());
    ASSERT_EQ(o, o_ref) << "outlier mask differs, M=" << M << " K=" << K;
    for (int64_t m = 0; m < M; ++m)
      ASSERT_TRUE(same_float(a[size_t(m)], a_ref[size_t(m)])) << "absmax row " << m;
  }
}

TEST_F(CudaBackendTest, QuantizeBitIdenticalToReference) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {1, 63}, {3, 64}, {5, 1000}, {17, 4096}, {64, 768}, {200, 320}, {2, 30000}};
  for (auto [M, K] : shapes)
    for (float th : {0.f, 6.f}) {
      check_quantize<float>(this, M, K, th, true);
      check_quantize<f16>(this, M, K, th, true);
      check_quantize<bf16>(this, M, K, th, true);
    }
}

TEST_F(CudaBackendTest, GemmInt32BitIdenticalToReference) {
  struct S { int64_t M, N, K; };
  const std::vector<S> shapes = {{1, 1, 1},    {1, 7, 63},    {3, 5, 64},     {16, 33, 4096},
                                 {128, 130, 256}, {65, 97, 1000}, {1, 4096, 4096}, {7, 9, 1},
                                 {300, 257, 1024}, {2, 3, 0}};
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> d(-128, 127);
  for (const auto& s : shapes) {
    std::vector<int8_t> a(static_cast<size_t>(s.M * s.K)), b(static_cast<size_t>(s.N * s.K));
    for (auto& v : a) v = int8_t(d(rng));
    for (auto& v : b) v = int8_t(d(rng));
    std::vector<int32_t> c_ref(static_cast<size_t>(s.M * s.N));
    ref::gemm_s8s8s32(s.M, s.N, s.K, a.data(), b.data(), c_ref.data());
    auto* dc = dev<int32_t>(size_t(s.M * s.N));
    be_->gemm_s8s8s32(s.M, s.N, s.K, up(a), up(b), dc);
    ASSERT_EQ(down(dc, size_t(s.M * s.N)), c_ref) << "M=" << s.M << " N=" << s.N << " K=" << s.K;
  }
}

template <class T> void check_dequant(CudaBackendTest* t, int64_t M, int64_t N, bool with_bias) {
  std::mt19937 rng(unsigned(M * 3 + N));
  std::uniform_int_distribution<int> d(-2000000, 2000000);
  std::uniform_real_distribution<float> u(0.01f, 8.f);
  std::vector<int32_t> c(static_cast<size_t>(M * N));
  std::vector<float> ax(static_cast<size_t>(M)), aw(static_cast<size_t>(N)), bias(static_cast<size_t>(N));
  for (auto& v : c) v = d(rng);
  for (auto& v : ax) v = u(rng);
  for (auto& v : aw) v = u(rng);
  for (auto& v : bias) v = u(rng) - 4.f;
  std::vector<T> y_ref(size_t(M * N));
  ref::dequantize(M, N, c.data(), ax.data(), aw.data(), with_bias ? bias.data() : nullptr, y_ref.data());
  auto* dy = t->dev<T>(size_t(M * N));
  t->be_->dequantize(M, N, t->up(c), t->up(ax), t->up(aw), with_bias ? t->up(bias) : nullptr,
                     dtype_of<T>(), dy);
  const auto y = t->down(dy, size_t(M * N));
  for (size_t i = 0; i < y.size(); ++i)
    ASSERT_TRUE(same_float(to_float(y[i]), to_float(y_ref[i])))
        << "element " << i << ": " << to_float(y[i]) << " vs " << to_float(y_ref[i]);
}

TEST_F(CudaBackendTest, DequantizeMatchesReference) {
  for (auto [M, N] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {33, 264}, {64, 4096}, {5, 1001}})
    for (bool b : {false, true}) {
      check_dequant<float>(this, M, N, b);
      check_dequant<f16>(this, M, N, b);
      check_dequant<bf16>(this, M, N, b);
    }
}

// A weight [N, K] ~ N(0, 0.5) in T, quantized row-wise as loading does (CB, SCB), and a bias.
struct TestWeight {
  std::vector<int8_t> cb;
  std::vector<float> scb, bias;
};
template <class T>
TestWeight make_weight(int64_t N, int64_t K, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 0.5f);
  std::vector<T> w(static_cast<size_t>(N * K));
  for (auto& v : w) v = from_float<T>(nd(rng));
  TestWeight tw{std::vector<int8_t>(static_cast<size_t>(N * K)), std::vector<float>(static_cast<size_t>(N)),
                std::vector<float>(static_cast<size_t>(N))};
  ref::quantize_rowwise(w.data(), N, K, 0.f, tw.cb.data(), tw.scb.data(), nullptr);
  for (auto& v : tw.bias) v = nd(rng);
  return tw;
}

// int8_linear vs ref::int8_linear: relative error and bit-identity, twice on the same inputs.
template <class T>
void check_linear(CudaBackendTest* t, int64_t M, int64_t K, int64_t N, float th, bool with_bias,
                  int n_out) {
  std::mt19937 rng(unsigned(M * 1009 + K * 17 + N));
  const TestWeight w = make_weight<T>(N, K, rng);
  auto x = make_x<T>(M, K, n_out, rng);
  Int8Weight hw{N, K, w.cb.data(), w.scb.data()};
  std::vector<T> y_ref(size_t(M * N));
  ref::int8_linear(hw, x.data(), M, th, with_bias ? w.bias.data() : nullptr, y_ref.data());

  Int8Weight dw{N, K, t->up(w.cb), t->up(w.scb)};
  const T* dx = t->up(x);
  const float* db = with_bias ? t->up(w.bias) : nullptr;
  auto* dy = t->dev<T>(size_t(M * N));
  double num = 0, den = 0;
  for (int rep = 0; rep < 2; ++rep) {  // the second call runs on reset internal state
    const std::vector<T> poison(size_t(M * N), from_float<T>(NAN));
    t->be_->to_device(dy, poison.data(), poison.size() * sizeof(T));
    t->be_->int8_linear(dw, dtype_of<T>(), dx, M, th, db, dy);
    const auto y = t->down(dy, size_t(M * N));
    int64_t diff = 0;
    num = den = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const float a = to_float(y[i]), b = to_float(y_ref[i]);
      ASSERT_TRUE(std::isfinite(a)) << "element " << i << " not written or not finite";
      num += double(a - b) * (a - b);
      den += double(b) * b;
      if (!same_float(a, b) && ++diff <= 3)
        std::printf("  mismatch m=%lld n=%lld: %.8g vs reference %.8g\n", (long long)(i / N),
                    (long long)(i % N), a, b);
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    EXPECT_LT(rel, 1e-6) << "M=" << M << " K=" << K << " N=" << N << " th=" << th;
    EXPECT_EQ(diff, 0) << "elements not bit-identical to the reference, M=" << M << " K=" << K
                       << " N=" << N << " th=" << th << " rel err " << rel;
  }
}

TEST_F(CudaBackendTest, Int8LinearMatchesReference) {
  struct S { int64_t M, K, N; };
  // M <= 16 with K % 16 == 0 takes the fused decode kernel; the rest the GEMM path.
  const std::vector<S> shapes = {{1, 64, 32},   {5, 4096, 96},  {16, 256, 33}, {16, 2048, 600},
                                 {1, 1000, 50}, {17, 512, 130}, {64, 768, 256}, {3, 63, 5},
                                 {130, 1024, 1000}, {2, 16, 1}};
  for (const auto& s : shapes)
    for (float th : {0.f, 6.f}) {
      check_linear<float>(this, s.M, s.K, s.N, th, true, 3);
      check_linear<f16>(this, s.M, s.K, s.N, th, th > 0, 3);
      check_linear<bf16>(this, s.M, s.K, s.N, th, true, 3);
    }
}

TEST_F(CudaBackendTest, Int8LinearManyOutlierColumns) {
  // More outlier columns than one shared-memory chunk (32) and than the pre-gathered weight
  // cache (128), on both paths; and quantize with that many.
  for (int n_out : {20, 100, 300}) {
    check_quantize<f16>(this, 40, 1024, 6.f, false, n_out);
    check_linear<f16>(this, 40, 1024, 72, 6.f, true, n_out);
    check_linear<f16>(this, 8, 1024, 72, 6.f, true, n_out);
  }
}

TEST_F(CudaBackendTest, Int8LinearDecodeLongSlices) {
  // Enough rows that the decode kernel does not split K (S = 1 on a 132-SM GPU): long K slices,
  // many register-pipelined steps per warp, and the S = 1 epilogue without atomics.
  check_linear<f16>(this, 2, 2688, 8448, 6.f, true, 5);
  check_linear<bf16>(this, 9, 2688, 8448, 6.f, false, 5);
}

// The row-streaming decode GEMV (which quantizes X itself) takes M = 1 by default; the
// LLMINT8_CUDA_DECODE_ROWS override sends up to 8 rows to it. Every M it can take, bit-identical
// to the reference: odd N, K not a multiple of its 512-byte load step, zero rows, outliers in more
// than one 32-column chunk, and a K whose Xq, bits and list use most of its shared memory.
TEST_F(CudaBackendTest, Int8LinearRowGemvEveryM) {
  for (auto& p : bufs_) be_->release(p);
  bufs_.clear();
  setenv("LLMINT8_CUDA_DECODE_ROWS", "8", 1);
  be_ = make_cuda_backend(0);
  unsetenv("LLMINT8_CUDA_DECODE_ROWS");
  ASSERT_TRUE(be_);
  for (int64_t M = 1; M <= 8; ++M) {
    check_linear<f16>(this, M, 4096, 130, 6.f, true, 3);
    check_linear<f16>(this, M, 272, 37, 6.f, true, 40);
    check_linear<bf16>(this, M, 1040, 9, 6.f, true, 3);
    check_linear<float>(this, M, 16, 5, 0.f, true, 0);
  }
  check_linear<f16>(this, 1, 28672, 24, 6.f, true, 5);
  check_linear<f16>(this, 4, 8192, 40, 6.f, true, 70);
}

#if defined(LLMINT8_HAVE_CUDA)
// cuda::int8_linear_gated: act(gate) * up straight out of the row GEMV, against the reference
// int8_linear of the [gate | up] weight (bit-identical to the GPU's, tests above) followed by the
// CPU model's activation and product, each rounded to T. Within one unit in the last place of T
// (four for T = float) plus the float error of the activation carried by the product (the device's
// expf / erff / tanhf and the host's may differ by an ulp or two; near GELU's zero, 1 + erf cancels
// them into a large relative error of a tiny value): |gate| * |up| * 2^-20. Most elements exactly.
template <class T>
void check_gated(CudaBackendTest* t, int64_t M, int64_t K, int64_t I, float th, int n_out, model::Act act) {
  const int64_t N = 2 * I;
  std::mt19937 rng(unsigned(M * 7919 + K * 31 + I));
  const TestWeight w = make_weight<T>(N, K, rng);
  auto x = make_x<T>(M, K, n_out, rng);
  Int8Weight hw{N, K, w.cb.data(), w.scb.data()};
  std::vector<T> gu(static_cast<size_t>(M * N));
  ref::int8_linear(hw, x.data(), M, th, w.bias.data(), gu.data());
  std::vector<float> u_ref(static_cast<size_t>(M * I));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < I; ++i) {
      float g = to_float(gu[size_t(m * N + i)]);
      model::apply_act(act, &g, 1);
      u_ref[size_t(m * I + i)] = to_float(from_float<T>(g * to_float(gu[size_t(m * N + I + i)])));
    }
  Int8Weight dw{N, K, t->up(w.cb), t->up(w.scb)};
  auto* du = t->dev<T>(size_t(M * I));
  const std::vector<T> poison(size_t(M * I), from_float<T>(NAN));
  t->be_->to_device(du, poison.data(), poison.size() * sizeof(T));
  // (model::Act's values are the kernels' activation codes: static_asserts in cuda_model.cu.)
  ASSERT_TRUE(cuda::int8_linear_gated(*t->be_, dw, dtype_of<T>(), t->up(x), M, th, t->up(w.bias), int(act), du))
      << "declined M=" << M << " K=" << K;
  const auto u = t->down(du, size_t(M * I));
  const int mbits = sizeof(T) == 4 ? 23 : (dtype_of<T>() == DType::BF16 ? 7 : 10);
  const float ulps = sizeof(T) == 4 ? 4.f : 1.f;
  int64_t exact = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    const float a = to_float(u[i]), b = u_ref[i];
    ASSERT_TRUE(std::isfinite(a)) << "element " << i << " not written";
    const float mag = std::max(std::fabs(a), std::fabs(b));
    const float ulp = std::ldexp(1.0f, std::max(std::ilogb(std::max(mag, 1e-30f)), -14) - mbits);
    const int64_t m = int64_t(i) / I, j = int64_t(i) % I;
    const float carried = std::fabs(to_float(gu[size_t(m * N + j)]) * to_float(gu[size_t(m * N + I + j)])) * 0x1p-20f;
    ASSERT_LE(std::fabs(a - b), ulps * ulp + carried)
        << "M=" << M << " K=" << K << " act " << int(act) << " m=" << m << " i=" << j << ": " << a << " vs " << b;
    exact += same_float(a, b);
  }
  EXPECT_GE(double(exact), 0.9 * double(u.size())) << "M=" << M << " K=" << K << " act " << int(act);
}

TEST_F(CudaBackendTest, Int8LinearGatedMatchesReference) {
  for (auto& p : bufs_) be_->release(p);
  bufs_.clear();
  setenv("LLMINT8_CUDA_DECODE_ROWS", "8", 1);  // every M the row GEMV can take
  be_ = make_cuda_backend(0);
  unsetenv("LLMINT8_CUDA_DECODE_ROWS");
  ASSERT_TRUE(be_);
  for (int64_t M : {1, 3, 4, 8}) {
    check_gated<f16>(this, M, 4096, 130, 6.f, 3, model::Act::SiLU);  // rows a warp's pairs do not divide
    check_gated<f16>(this, M, 272, 37, 6.f, 40, model::Act::GELUTanh);  // > 32 outlier columns
    check_gated<bf16>(this, M, 1040, 9, 6.f, 3, model::Act::GELU);
    check_gated<float>(this, M, 16, 5, 0.f, 0, model::Act::ReLU);
  }
  check_gated<f16>(this, 1, 4096, 2500, 6.f, 5, model::Act::QuickGELU);  // more pairs than warps
  check_gated<bf16>(this, 1, 14336, 300, 6.f, 5, model::Act::SiLU);
  // Declined (false, nothing written): shapes the row GEMV does not take.
  std::vector<int8_t> cb(64 * 40, 1);
  std::vector<float> scb(64, 1.f);
  Int8Weight odd{63, 40, up(cb), up(scb)}, k40{64, 40, up(cb), up(scb)}, k32{64, 32, up(cb), up(scb)};
  auto* x = dev<f16>(40 * 20);
  auto* y = dev<f16>(64 * 20);
  EXPECT_FALSE(cuda::int8_linear_gated(*be_, odd, DType::F16, x, 1, 6.f, nullptr, 0, y));  // odd rows
  EXPECT_FALSE(cuda::int8_linear_gated(*be_, k40, DType::F16, x, 1, 6.f, nullptr, 0, y));  // K % 16 != 0
  EXPECT_FALSE(cuda::int8_linear_gated(*be_, k32, DType::F16, x, 9, 6.f, nullptr, 0, y));  // M > 8
  EXPECT_TRUE(cuda::int8_linear_gated(*be_, k32, DType::F16, x, 8, 6.f, nullptr, 0, y));
  be_->synchronize();
}
#endif

TEST_F(CudaBackendTest, RejectsBadArguments) {
  EXPECT_THROW(be_->gemm_s8s8s32(-1, 2, 3, nullptr, nullptr, nullptr), Error);
  EXPECT_THROW(be_->quantize_rowwise(DType::I8, nullptr, 1, 1, 0.f, nullptr, nullptr, nullptr), Error);
  EXPECT_THROW(be_->dequantize(1, 1, nullptr, nullptr, nullptr, nullptr, DType::F16, nullptr), Error);
  Int8Weight w{4, 4, nullptr, nullptr};
  EXPECT_THROW(be_->int8_linear(w, DType::F16, nullptr, 1, 6.f, nullptr, nullptr), Error);
  EXPECT_THROW(make_cuda_backend(1 << 20), Error);
}

#if defined(LLMINT8_HAVE_CUDA)
// After one warm-up call per shape, int8_linear is captured into a CUDA graph (no host sync, no
// allocation); replays with new X contents give the reference results.
TEST_F(CudaBackendTest, Int8LinearGraphCaptureReplays) {
  for (int64_t M : {4, 96}) {
    const int64_t K = 512, N = 256;
    std::mt19937 rng(static_cast<unsigned>(M));
    std::normal_distribution<float> nd(0.f, 0.5f);
    std::vector<f16> w(static_cast<size_t>(N * K));
    for (auto& v : w) v = from_float<f16>(nd(rng));
    std::vector<int8_t> cb(static_cast<size_t>(N * K));
    std::vector<float> scb(static_cast<size_t>(N));
    ref::quantize_rowwise(w.data(), N, K, 0.f, cb.data(), scb.data(), nullptr);
    Int8Weight hw{N, K, cb.data(), scb.data()};
    Int8Weight dw{N, K, up(cb), up(scb)};
    auto* dx = dev<f16>(size_t(M * K));
    auto* dy = dev<f16>(size_t(M * N));
    auto x0 = make_x<f16>(M, K, 2, rng);
    be_->to_device(dx, x0.data(), x0.size() * 2);
    be_->int8_linear(dw, DType::F16, dx, M, 6.f, nullptr, dy);  // warm-up: sizes the scratch
    be_->synchronize();
    auto stream = static_cast<cudaStream_t>(cuda::stream_of(*be_));
    ASSERT_NE(stream, nullptr);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    be_->int8_linear(dw, DType::F16, dx, M, 6.f, nullptr, dy);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int rep = 0; rep < 3; ++rep) {
      auto x = make_x<f16>(M, K, 1 + rep, rng);
      be_->to_device(dx, x.data(), x.size() * 2);
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      be_->synchronize();
      std::vector<f16> y_ref(static_cast<size_t>(M * N));
      ref::int8_linear(hw, x.data(), M, 6.f, nullptr, y_ref.data());
      const auto y = down(dy, size_t(M * N));
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_TRUE(same_float(to_float(y[i]), to_float(y_ref[i])))
            << "M=" << M << " rep " << rep << " element " << i << ": " << to_float(y[i])
            << " vs reference " << to_float(y_ref[i]);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}
#endif

}  // namespace
}  // namespace llmint8

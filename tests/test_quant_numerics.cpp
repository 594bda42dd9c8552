// Numerics outside any one backend: the fp16/bf16 conversions of include/llmint8/dtype.h against
// independent float64 definitions (exhaustive where the domain allows), and what LLM.int8()'s
// mixed-precision decomposition buys on data with outlier features, against vector-wise int8 and
// the tensor-wise baselines of src/quant/baselines.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "llmint8/backend.h"
#include "llmint8/dtype.h"
#include "numeric_util.h"
#include "quant/baselines.h"
#include "quant/reference.h"

namespace {

using namespace llmint8;

// ---- independent definitions of the 16-bit formats, in float64 --------------------------------

// Value of an fp16 bit pattern (not NaN/Inf): sign * m * 2^-24 (subnormal) or (1024+m) * 2^(e-25).
double f16_value(uint16_t b) {
  const int e = (b >> 10) & 0x1f, m = b & 0x3ff;
  const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25);
  return (b & 0x8000) ? -mag : mag;
}
// Value of a bf16 bit pattern (not NaN/Inf): m * 2^-133 (subnormal) or (128+m) * 2^(e-134).
double bf16_value(uint16_t b) {
  const int e = (b >> 7) & 0xff, m = b & 0x7f;
  const double mag = e == 0 ? std::ldexp(double(m), -133) : std::ldexp(double(128 + m), e - 134);
  return (b & 0x8000) ? -mag : mag;
}

// Round-to-nearest-even onto a format whose positive finite patterns 0..max_bits are ordered by
// value; overflow_at is the magnitude (max + half an ulp) from which the result is Inf (a tie there
// goes to Inf, because max_bits is odd). Returns the bit pattern; NaN is handled by the caller.
template <class ValueFn>
uint16_t round_to_format(double x, uint16_t max_bits, uint16_t inf_bits, double overflow_at, ValueFn value) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (a >= overflow_at) return sign | inf_bits;
  // largest pattern with value <= a
  uint32_t lo = 0, hi = max_bits;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (value(uint16_t(mid)) <= a) lo = mid; else hi = mid - 1;
  }
  if (lo == max_bits) return sign | uint16_t(lo);  // below overflow_at: rounds down to max
  const double below = value(uint16_t(lo)), above = value(uint16_t(lo + 1));
  const double d_lo = a - below, d_hi = above - a;  // exact: a and both values share a fine grid
  uint32_t r = d_lo < d_hi ? lo : d_hi < d_lo ? lo + 1 : (lo % 2 == 0 ? lo : lo + 1);
  return sign | uint16_t(r);
}
uint16_t expected_f16(float f) {
  // max 65504 (0x7bff); the next step would be 65536, so >= 65520 overflows.
  return round_to_format(double(f), 0x7bff, 0x7c00, 65520.0, f16_value);
}
uint16_t expected_bf16(float f) {
  // max (2 - 2^-7) * 2^127 (0x7f7f); >= (2 - 2^-8) * 2^127 overflows.
  return round_to_format(double(f), 0x7f7f, 0x7f80, std::ldexp(2.0 - std::ldexp(1.0, -8), 127), bf16_value);
}
bool is_f16_nan(uint16_t b) { return (b & 0x7c00) == 0x7c00 && (b & 0x3ff); }
bool is_bf16_nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f); }

// Checks to_f16 / to_bf16 of one float against the definitions; returns false on mismatch.
bool check_f16(float f) {
  const uint16_t got = to_f16(f).bits;
  if (std::isnan(f)) return is_f16_nan(got);
  const uint16_t want = expected_f16(f);
  if (got != want)
    ADD_FAILURE() << "to_f16(" << std::hexfloat << f << std::defaultfloat << ") = 0x" << std::hex << got
                  << ", expected 0x" << want;
  return got == want;
}
bool check_bf16(float f) {
  const uint16_t got = to_bf16(f).bits;
  if (std::isnan(f)) {
    if (!is_bf16_nan(got)) ADD_FAILURE() << "to_bf16(NaN 0x" << std::hex << float_to_bits(f) << ") = 0x" << got;
    return is_bf16_nan(got);
  }
  const uint16_t want = expected_bf16(f);
  if (got != want)
    ADD_FAILURE() << "to_bf16(" << std::hexfloat << f << std::defaultfloat << ") = 0x" << std::hex << got
                  << ", expected 0x" << want;
  return got == want;
}

// ---- fp16 ----------------------------------------------------------------------------------

TEST(Fp16, ToFloatExhaustiveMatchesDefinition) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = to_float(f16{uint16_t(b)});
    const uint32_t e = (b >> 10) & 0x1f, m = b & 0x3ff;
    if (e == 0x1f && m) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << b;
    } else if (e == 0x1f) {
      ASSERT_TRUE(std::isinf(f) && (f < 0) == bool(b & 0x8000)) << std::hex << b;
    } else {
      ASSERT_EQ(double(f), f16_value(uint16_t(b))) << std::hex << b;
      ASSERT_EQ(std::signbit(f), bool(b & 0x8000)) << std::hex << b;  // -0 stays -0
    }
  }
}

TEST(Fp16, RoundTripExhaustive) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const f16 h{uint16_t(b)};
    const uint16_t back = to_f16(to_float(h)).bits;
    if (is_f16_nan(uint16_t(b)))
      ASSERT_TRUE(is_f16_nan(back)) << "NaN 0x" << std::hex << b << " came back as 0x" << back;
    else
      ASSERT_EQ(back, b) << std::hex << b;
  }
}

TEST(Fp16, TiesToEvenAtEveryMidpoint) {
  // Every midpoint between adjacent fp16 values (exact in float: fp16 has 11 significant bits),
  // and its float neighbours on either side, for both signs; including the subnormal range, the
  // midpoint 2^-25 between 0 and the smallest subnormal, and 65520 between 65504 and "65536" (Inf).
  int bad = 0;
  for (uint32_t b = 0; b < 0x7c00 && bad < 10; ++b) {
    const double hi = b == 0x7bff ? 65536.0 : f16_value(uint16_t(b + 1));
    const float mid = float((f16_value(uint16_t(b)) + hi) / 2);
    ASSERT_EQ(double(mid), (f16_value(uint16_t(b)) + hi) / 2) << "midpoint not exact";
    for (float x : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f)})
      for (float s : {1.f, -1.f}) bad += !check_f16(s * x);
  }
}

TEST(Fp16, RandomFloatsMatchFloat64Rounding) {
  testutil::Rng rng(1601);
  int bad = 0;
  for (int i = 0; i < 400000 && bad < 10; ++i) {
    // Half uniformly random bit patterns (NaN, Inf, huge, tiny), half log-uniform over the fp16
    // range and beyond: magnitudes 2^-30 (below the subnormals) to 2^17 (overflow).
    float f;
    if (i % 2) f = bits_to_float(uint32_t(rng.bits()));
    else f = float((rng.chance(0.5) ? -1 : 1) * std::exp2(rng.uniform(-30.0, 17.0)));
    bad += !check_f16(f);
  }
  for (float f : {0.f, -0.f, 65504.f, 65519.996f, 65520.f, -65520.f, 1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::denorm_min(), 0x1.0p-25f, 0x1.000002p-25f, 0x1.8p-24f,
                  0x1.ffcp-15f, 0x1.ffep-15f})
    check_f16(f);
  // NaN payloads of either sign, including ones whose top mantissa bits are 0 (a plain shift
  // would turn them into Inf).
  for (uint32_t u : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f801000u, 0x7fffffffu})
    EXPECT_TRUE(is_f16_nan(to_f16(bits_to_float(u)).bits)) << std::hex << u;
}

// ---- bf16 ----------------------------------------------------------------------------------

TEST(Bf16, ToFloatExhaustiveMatchesDefinition) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = to_float(bf16{uint16_t(b)});
    const uint32_t e = (b >> 7) & 0xff, m = b & 0x7f;
    if (e == 0xff && m) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << b;
    } else if (e == 0xff) {
      ASSERT_TRUE(std::isinf(f) && (f < 0) == bool(b & 0x8000)) << std::hex << b;
    } else {
      ASSERT_EQ(double(f), bf16_value(uint16_t(b))) << std::hex << b;
      ASSERT_EQ(std::signbit(f), bool(b & 0x8000)) << std::hex << b;
    }
  }
}

TEST(Bf16, RoundTripExhaustive) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t back = to_bf16(to_float(bf16{uint16_t(b)})).bits;
    if (is_bf16_nan(uint16_t(b)))
      ASSERT_TRUE(is_bf16_nan(back)) << "NaN 0x" << std::hex << b << " came back as 0x" << back;
    else
      ASSERT_EQ(back, b) << std::hex << b;
  }
}

TEST(Bf16, TiesToEvenAtEveryMidpoint) {
  int bad = 0;
  for (uint32_t b = 0; b < 0x7f80 && bad < 10; ++b) {
    // The midpoint above pattern b is the float with b in the top half and 0x8000 below.
    const float mid = bits_to_float((b << 16) | 0x8000u);
    for (float x : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, std::numeric_limits<float>::infinity())})
      for (float s : {1.f, -1.f}) bad += !check_bf16(s * x);
  }
}

TEST(Bf16, RandomFloatsMatchFloat64Rounding) {
  testutil::Rng rng(1602);
  int bad = 0;
  for (int i = 0; i < 400000 && bad < 10; ++i) {
    float f;
    if (i % 2) f = bits_to_float(uint32_t(rng.bits()));
    else f = float((rng.chance(0.5) ? -1 : 1) * std::exp2(rng.uniform(-149.0, 128.0)));
    bad += !check_bf16(f);
  }
  for (float f : {0.f, -0.f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::infinity(), 0x1.fep127f, 0x1.ff8p127f, 0x1.ff7ffep127f})
    check_bf16(f);
  for (uint32_t u : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7fffffffu})
    EXPECT_TRUE(is_bf16_nan(to_bf16(bits_to_float(u)).bits)) << std::hex << u;
}

// ---- what the decomposition buys ------------------------------------------------------------

// X [M,K]: N(0,1) with a few outlier feature columns (magnitudes 20-60, random sign, every row),
// W [N,K]: N(0, 0.02). Mean |Y - Y64| for each method, Y64 the float64 product X W^T.
//
// Both LLM.int8() and plain vector-wise int8 use the same int8 weights, and (as in bitsandbytes)
// the decomposition multiplies the outlier columns against those dequantized int8 weights. So the
// error against X W^T has a floor that the decomposition cannot remove: the weight rounding error
// (~ SCB/254 per element) times the large outlier activations. Against X W^^T (W^ = CB*SCB/127, the
// weights both methods actually use) only the activation side remains, which is what the
// decomposition is about. Both are measured.
struct OutlierErrors {
  double llm_int8 = 0, vectorwise = 0, absmax_tensor = 0, zeropoint_tensor = 0, llm_int8_f16 = 0;
  double llm_int8_act = 0, vectorwise_act = 0;  // against X W^^T: activation quantization only
  double mean_abs_y = 0;
};

OutlierErrors measure_outlier_errors(int64_t M, int64_t N, int64_t K, int64_t n_outlier_cols, uint64_t seed) {
  testutil::Rng rng(seed);
  std::vector<float> X(static_cast<size_t>(M * K)), W(static_cast<size_t>(N * K));
  for (auto& x : X) x = float(rng.normal());
  for (auto& w : W) w = float(0.02 * rng.normal());
  std::vector<int64_t> cols;
  while (int64_t(cols.size()) < n_outlier_cols) {
    const int64_t k = rng.integer(0, K - 1);
    if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
  }
  for (int64_t k : cols)
    for (int64_t m = 0; m < M; ++m) X[size_t(m * K + k)] = float((rng.chance(0.5) ? -1 : 1) * rng.uniform(20.0, 60.0));
  const std::vector<double> Y64 = testutil::matmul_f64(X, W, nullptr, M, N, K);

  // The int8 weights (F32 source; the F16 run below quantizes its own F16 copy).
  std::vector<int8_t> CB(static_cast<size_t>(N * K));
  std::vector<float> SCB(static_cast<size_t>(N));
  testutil::ref_quantize_rowwise(testutil::HostArray(DType::F32, W), N, K, 0.f, CB.data(), SCB.data(), nullptr);
  std::vector<float> What(W.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) What[size_t(n * K + k)] = float(double(CB[size_t(n * K + k)]) * SCB[n] / 127.0);
  const std::vector<double> Y64hat = testutil::matmul_f64(X, What, nullptr, M, N, K);

  auto mean_err = [&](const std::vector<float>& Y, const std::vector<double>& ref) {
    double s = 0;
    for (size_t i = 0; i < Y.size(); ++i) s += std::fabs(double(Y[i]) - ref[i]);
    return s / double(Y.size());
  };
  auto int8_linear = [&](DType io, float threshold) {
    const testutil::HostArray Xio(io, X), Wio(io, W);
    std::vector<int8_t> cb(static_cast<size_t>(N * K));
    std::vector<float> scb(static_cast<size_t>(N));
    testutil::ref_quantize_rowwise(Wio, N, K, 0.f, cb.data(), scb.data(), nullptr);
    testutil::HostArray Y(io, static_cast<size_t>(M * N));
    testutil::ref_int8_linear(Int8Weight{N, K, cb.data(), scb.data()}, Xio, M, threshold, nullptr, Y);
    return Y.to_floats();
  };
  OutlierErrors e;
  const std::vector<float> y6 = int8_linear(DType::F32, 6.f), y0 = int8_linear(DType::F32, 0.f);
  e.llm_int8 = mean_err(y6, Y64);
  e.vectorwise = mean_err(y0, Y64);
  e.llm_int8_act = mean_err(y6, Y64hat);
  e.vectorwise_act = mean_err(y0, Y64hat);
  e.llm_int8_f16 = mean_err(int8_linear(DType::F16, 6.f), Y64);
  e.absmax_tensor = mean_err(baseline::matmul_absmax_tensor(X.data(), W.data(), M, N, K), Y64);
  e.zeropoint_tensor = mean_err(baseline::matmul_zeropoint_tensor(X.data(), W.data(), M, N, K), Y64);
  for (double y : Y64) e.mean_abs_y += std::fabs(y) / double(Y64.size());
  return e;
}

void print_errors(const char* label, int64_t K, int64_t n_cols, const OutlierErrors& e) {
  std::printf(
      "[ %s: K=%ld, %ld outlier columns of |x| 20-60, W ~ N(0,0.02), mean |Y64| %.4f ]\n"
      "  mean |Y - X W^T|: LLM.int8() t=6 %.6f (F16 io %.6f) | vector-wise int8 %.6f (%.2fx) |"
      " tensor-wise absmax %.6f | tensor-wise zero-point %.6f\n"
      "  mean |Y - X W^^T| (activation error only): LLM.int8() %.6f | vector-wise %.6f (%.2fx)\n",
      label, long(K), long(n_cols), e.mean_abs_y, e.llm_int8, e.llm_int8_f16, e.vectorwise,
      e.vectorwise / e.llm_int8, e.absmax_tensor, e.zeropoint_tensor, e.llm_int8_act, e.vectorwise_act,
      e.vectorwise_act / e.llm_int8_act);
}

TEST(OutlierDecomposition, CutsErrorOnOutlierFeatures) {
  // K = 1024 with 5 outlier columns (~0.5%).
  const OutlierErrors e = measure_outlier_errors(64, 256, 1024, 5, 2022);
  print_errors("0.5% outliers", 1024, 5, e);
  // First-order model (each rounding error uniform, std = scale/(127*sqrt(12)), summed as
  // independent terms): vector-wise error ~ (row max of the outliers ~53)/(127 sqrt 12) * 0.02 *
  // sqrt(K) = 0.078; LLM.int8() ~ sqrt(a^2 + b^2 + c^2) with a = outlier weight rounding
  // (sqrt(5) * rms|x| 41.6 * SCB ~0.066 / (127 sqrt 12)) = 0.014, b = N(0,1)-part activation
  // rounding (row max ~3.4) = 0.005, c = remaining weight rounding = 0.005: 0.016, about 5x.
  // Activation side alone: the ratio of the row scales, ~53/3.4 = 15x. Require 10x and 4x.
  EXPECT_GE(e.vectorwise_act / e.llm_int8_act, 10.0);
  EXPECT_GE(e.vectorwise / e.llm_int8, 4.0);
  // Vector-wise scales beat one scale for the whole tensor.
  EXPECT_LT(e.vectorwise, e.absmax_tensor);
  EXPECT_LT(e.vectorwise, e.zeropoint_tensor);
  // 16-bit io adds only output rounding on top.
  EXPECT_LT(e.llm_int8_f16, 1.1 * e.llm_int8);
}

TEST(OutlierDecomposition, PaperLikeFewOutlierDims) {
  // Dettmers et al. report the outliers of a 6.7B model concentrated in ~6 of 4096 feature
  // dimensions (0.15%); with fewer outlier columns per K the weight floor is lower.
  const OutlierErrors e = measure_outlier_errors(16, 128, 4096, 6, 2023);
  print_errors("0.15% outliers", 4096, 6, e);
  // The same model: vector-wise 0.157 vs sqrt(0.0176^2 + 0.011^2 + 0.011^2) = 0.0235, ~6.7x;
  // activation side ~54/3.8 = 14x. Require 10x and 5x.
  EXPECT_GE(e.vectorwise_act / e.llm_int8_act, 10.0);
  EXPECT_GE(e.vectorwise / e.llm_int8, 5.0);
  EXPECT_LT(e.vectorwise, e.absmax_tensor);
  EXPECT_LT(e.vectorwise, e.zeropoint_tensor);
}

}  // namespace

// Bulk widening (src/cpu/convert.h) equals the scalar conversion on every 16-bit pattern, at
// lengths that leave vector remainders.
#include "cpu/convert.h"
TEST(Widen, F16AndBf16MatchScalarOnEveryPattern) {
  std::vector<uint16_t> all(65536 + 13);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i * 40503u);  // odd multiplier: a permutation mod 2^16
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(15), int64_t(17), int64_t(all.size())}) {
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    llmint8::cpu::widen_f16(all.data(), a.data(), n);
    llmint8::cpu::widen_bf16(all.data(), b.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const float ea = llmint8::to_float(llmint8::f16{all[size_t(i)]});
      const float eb = llmint8::to_float(llmint8::bf16{all[size_t(i)]});
      // NaN stays NaN (the hardware conversion quiets signalling NaNs); all else bit for bit.
      if (std::isnan(ea))
        ASSERT_TRUE(std::isnan(a[size_t(i)])) << "f16 " << all[size_t(i)];
      else
        ASSERT_EQ(llmint8::float_to_bits(a[size_t(i)]), llmint8::float_to_bits(ea)) << "f16 " << all[size_t(i)];
      ASSERT_EQ(llmint8::float_to_bits(b[size_t(i)]), llmint8::float_to_bits(eb)) << "bf16 " << all[size_t(i)];
    }
  }
}

// The int8 baselines LLM.int8() is compared against (paper, section 2): one scale for the whole
// tensor. Used by the tests and the error report (bench/quant_error) to show what vector-wise
// quantization and the mixed-precision decomposition buy.
#pragma once
#include <cstdint>
#include <vector>

namespace llmint8::baseline {

// Tensor-wise absmax: q = round_half_even(x * 127 / max|X|); x ~ q * max|X| / 127.
struct AbsmaxTensor {
  std::vector<int8_t> q;
  float absmax = 0.f;
};
AbsmaxTensor quantize_absmax_tensor(const float* x, int64_t n);

// Tensor-wise zero-point (asymmetric): scale = 255 / (max - min), zp = round(-min * scale) - 128,
// q = clamp(round(x * scale) + zp, -128, 127); x ~ (q - zp) / scale. Uses the full int8 range
// for skewed distributions such as ReLU/GeLU outputs.
struct ZeroPointTensor {
  std::vector<int8_t> q;
  float scale = 1.f;
  int32_t zero_point = 0;
};
ZeroPointTensor quantize_zeropoint_tensor(const float* x, int64_t n);

// Y [M,N] = X [M,K] * W [N,K]^T with both operands quantized by the method, int32 accumulation,
// then dequantized to float.
std::vector<float> matmul_absmax_tensor(const float* X, const float* W, int64_t M, int64_t N,
                                        int64_t K);
std::vector<float> matmul_zeropoint_tensor(const float* X, const float* W, int64_t M, int64_t N,
                                           int64_t K);

}  // namespace llmint8::baseline

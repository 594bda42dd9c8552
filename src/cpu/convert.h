// Widening 16-bit floats to float32 in bulk, with the best instructions the CPU has (AVX-512 /
// F16C, chosen at run time), for 16-bit weights multiplied in float32 (fp16/bf16 precision,
// lm_head and embeddings under int8). Exact: every f16/bf16 value is a float32 value (f16
// signalling NaNs come out quiet, as the hardware converts them).
#pragma once
#include <cstdint>

namespace llmint8::cpu {

void widen_f16(const uint16_t* src, float* dst, int64_t n);
void widen_bf16(const uint16_t* src, float* dst, int64_t n);

}  // namespace llmint8::cpu

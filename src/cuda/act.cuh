// The activations of the MLPs on the GPU, as src/model/linear.cpp's apply_act (float32). One
// definition for the model's act_kernel and the int8 row GEMV's fused gated epilogue, so that both
// give the same bits. Codes: the model's act_code (cuda_model.cu).
#pragma once
#include <cuda_runtime.h>

namespace llmint8::cuda {

enum class ActK : int { SiLU = 0, GELU = 1, GELUTanh = 2, ReLU = 3, QuickGELU = 4 };

__device__ __forceinline__ float act_f(int a, float x) {
  switch (a) {
    case 0: return x / (1.0f + expf(-x));
    case 1: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 2: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 3: return x < 0.f ? 0.f : x;
    default: return x / (1.0f + expf(-1.702f * x));
  }
}

}  // namespace llmint8::cuda

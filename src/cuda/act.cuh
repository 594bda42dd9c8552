// The activations of the MLPs on the GPU, as src/model/linear.cpp's apply_act (float32). One
// definition for the model's act_kernel and the int8 row GEMV's fused gated epilogue, so that both
// give the same bits. The codes (ActK) are model::Act's values (static_asserts in cuda_model.cu).
#pragma once
#include <cuda_runtime.h>

namespace llmint8::cuda {

enum class ActK : int { SiLU = 0, GELU = 1, GELUTanh = 2, ReLU = 3, QuickGELU = 4 };

__device__ __forceinline__ float act_f(int a, float x) {
  switch (static_cast<ActK>(a)) {
    case ActK::SiLU: return x / (1.0f + expf(-x));
    case ActK::GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case ActK::GELUTanh: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case ActK::ReLU: return x < 0.f ? 0.f : x;
    case ActK::QuickGELU: break;
  }
  return x / (1.0f + expf(-1.702f * x));  // QuickGELU
}

}  // namespace llmint8::cuda

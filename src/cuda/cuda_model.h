// The whole transformer on a CUDA GPU (LoadOptions.device "cuda" or "cuda:N").
//
// Loading reuses the CPU side completely: config parsing, the ArchSpec, checkpoint reading and
// the per-Linear preparation (bitsandbytes' fp16-cast-then-quantize, pre-quantized 8-bit
// checkpoints, fused-QKV row reordering) run in src/model/transformer.cpp; the prepared weights
// are then uploaded once (src/model/transformer.h: view_transformer) and the host copy dropped.
//
// On the device: activations between Linears are 16-bit (fp16 for Int8 and F16, bf16 for BF16),
// the residual stream stays float32, every reduction (norms, softmax, GEMM accumulation) is in
// float32. Linear weights: Int8 = LLM.int8() CB/SCB through the CUDA backend's int8_linear (the
// mixed-precision decomposition with the model's threshold); F16/BF16 = dense 16-bit weights
// multiplied by cuBLAS with float32 accumulation. lm_head / tied embeddings stay 16-bit. The KV
// cache is 16-bit. Logits come back to the host as float32. Attention never stores a [T, T] score
// matrix: one query per sequence (decode steps) uses decode_attention_kernel, 2..16 queries a tiled
// online-softmax kernel, prefill chunks of queries through cuBLAS (src/cuda/cuda_model.cu).
// One-token steps replay a CUDA graph whose kernels are programmatic dependents of each other
// (cuda/pdl.cuh); in decode steps the gate/up row GEMV makes the gated MLP's activation itself.
// Sessions of one model share its device scratch: use them from one thread at a time.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "llmint8/model.h"

namespace llmint8::cuda {

// Throws Error when built without CUDA, when no GPU is present, or when the model does not fit.
std::unique_ptr<Model> load_cuda_model(const std::string& dir, const LoadOptions& opts);

// The shape of a Llama-family model (RMSNorm, RoPE, SwiGLU, GQA, untied lm_head).
struct LlamaShape {
  int64_t hidden = 4096, layers = 32, heads = 32, kv_heads = 8, head_dim = 128;
  int64_t intermediate = 14336, vocab = 128256, max_positions = 8192;
  double rope_theta = 500000.0, norm_eps = 1e-5;
};

// A Llama-family model of that shape with synthetic weights generated directly in GPU memory
// (benchmarks: no checkpoint on disk, no host copy). Weights ~ uniform with std `std`, norm
// weights 1 except 6 hidden dims of weight 8 (systematic outlier features), no biases; Int8 quantizes the generated fp16 weights on the device (threshold-0
// row-wise, as loading does). Of opts only device, precision and threshold are used.
std::unique_ptr<Model> make_synthetic_cuda_model(const LlamaShape& shape, const LoadOptions& opts,
                                                 uint64_t seed = 1, float std = 0.01f);

// Bytes of device memory held by a GPU model's weights (0 for other models).
uint64_t resident_weight_bytes(const Model& m);

}  // namespace llmint8::cuda

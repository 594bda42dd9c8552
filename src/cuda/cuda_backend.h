// CUDA-specific access to a backend made by make_cuda_backend(): its stream, so that callers
// (benchmarks, tests, the runtime) can order their own work with it or capture it into a graph.
#pragma once
#include "llmint8/backend.h"

namespace llmint8::cuda {

// The cudaStream_t (as void*) on which `b` enqueues all its work; nullptr when `b` is not the
// CUDA backend.
void* stream_of(Backend& b);

// The gated MLP input projection of a decode step in one kernel: W is [gate | up] (2I rows, the
// gate rows first), and Y [M, I] = T(act(float(T(X gate^T))) * float(T(X up^T))), each product as
// int8_linear computes it (same bits), act as the model's (act code: cuda/act.cuh ActK). Only for
// the shapes int8_linear runs on its row GEMV (few rows, K % 16 == 0, aligned); returns false and
// launches nothing otherwise (and when `b` is not the CUDA backend): the caller then runs
// int8_linear and its own activation.
bool int8_linear_gated(Backend& b, const Int8Weight& W, DType t, const void* X, int64_t M, float threshold,
                       const float* bias, int act, void* Y);

}  // namespace llmint8::cuda

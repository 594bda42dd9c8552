// CUDA-specific access to a backend made by make_cuda_backend(): its stream, so that callers
// (benchmarks, tests, the runtime) can order their own work with it or capture it into a graph.
#pragma once
#include "llmint8/backend.h"

namespace llmint8::cuda {

// The cudaStream_t (as void*) on which `b` enqueues all its work; nullptr when `b` is not the
// CUDA backend.
void* stream_of(Backend& b);

}  // namespace llmint8::cuda

// Programmatic dependent launch (sm_90+; no-ops elsewhere). The int8 decode GEMVs are launched as
// programmatic dependents of the kernel before them (cuda_backend.cu, launch_pdl): they start
// streaming weights (which do not depend on X) early and wait for that kernel with
// griddepcontrol.wait -- full completion and memory visibility -- before touching its outputs.
// A kernel that may precede one calls pdl_launch_dependents() as it starts, so the GEMV's blocks
// are scheduled while it runs rather than after its last block exits.
#pragma once
#include <cuda_runtime.h>

namespace llmint8::cuda {

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait_primary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace llmint8::cuda

// Programmatic dependent launch (sm_90+; no-ops elsewhere). Kernels of the forward pass are launched
// as programmatic dependents of the kernel before them (cuda_backend.cu launch_pdl for the int8
// GEMVs, cuda_model.cu CudaModel::launch for the model's kernels): their blocks may be scheduled
// while that kernel still runs and do what does not depend on it (stream weights, copy the KV
// cache rows of earlier steps, read norm weights), then wait for it with griddepcontrol.wait --
// full completion and memory visibility -- before touching its outputs.
//
// The rule that keeps this correct: every block of a kernel launched this way executes
// pdl_wait_primary() before it reads anything an earlier kernel of the stream writes and before
// it writes anything. Then no kernel completes before the one before it, so completion is
// transitive along the chain (a kernel's wait also covers every kernel before its primary).
// A kernel calls pdl_launch_dependents() early (as it starts, or once its own prologue loads are
// issued) so that the next kernel's blocks are scheduled while it runs rather than after its last
// block exits.
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

// kern<<<grid, block, smem, stream>>>(args...), as a programmatic dependent of the kernel before
// it on the stream when `pdl` (the kernel must then follow the rule above).
template <class... KArgs, class... Args>
cudaError_t launch_kernel(bool pdl, cudaStream_t stream, dim3 grid, dim3 block, size_t smem, void (*kern)(KArgs...),
                          Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kern, static_cast<KArgs>(args)...);
}

}  // namespace llmint8::cuda

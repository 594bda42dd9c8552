// Built when the CUDA backend is off: there is no CUDA backend or GPU model to make.
// (CMake also globs src/cuda/*.cpp into CUDA builds: the guard keeps this file empty there.)
#ifndef LLMINT8_HAVE_CUDA
#include "cuda/cuda_model.h"
#include "llmint8/backend.h"
#include "llmint8/error.h"

namespace llmint8 {
std::unique_ptr<Backend> make_cuda_backend(int) { return nullptr; }
}  // namespace llmint8

namespace llmint8::cuda {
std::unique_ptr<Model> load_cuda_model(const std::string&, const LoadOptions& opts) {
  throw Error("device '" + opts.device + "': this build of llmint8 has no CUDA support");
}
std::unique_ptr<Model> make_synthetic_cuda_model(const LlamaShape&, const LoadOptions&, uint64_t, float) {
  throw Error("this build of llmint8 has no CUDA support");
}
uint64_t resident_weight_bytes(const Model&) { return 0; }
}  // namespace llmint8::cuda
#endif

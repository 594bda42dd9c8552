// Built when the CUDA backend is off: there is no CUDA backend to make.
#include "llmint8/backend.h"

namespace llmint8 {
std::unique_ptr<Backend> make_cuda_backend(int) { return nullptr; }
}  // namespace llmint8

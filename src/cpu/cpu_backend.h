// Internal entry points of the CPU backend, for tests and benchmarks that pin a kernel tier.
#pragma once
#include <memory>

#include "cpu/cpu_features.h"
#include "llmint8/backend.h"

namespace llmint8::cpu {

// True when this CPU can run kernels of tier `isa`.
bool isa_supported(Isa isa);
// make_cpu_backend() uses the best tier, or the one named by the environment variable
// LLMINT8_CPU_ISA (scalar, avx2, avx512vnni, amx) when set.
// The CPU backend restricted to tier `isa` (throws llmint8::Error if the CPU lacks it).
// threads = 0: all OpenMP threads.
std::unique_ptr<Backend> make_cpu_backend_isa(int threads, Isa isa);

}  // namespace llmint8::cpu

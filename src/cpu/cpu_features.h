// Run-time CPU feature detection for the CPU backend's kernel dispatch.
#pragma once

namespace llmint8::cpu {

// The instruction-set tiers the CPU backend has kernels for, best last.
enum class Isa { Scalar = 0, Avx2 = 1, Avx512Vnni = 2, Amx = 3 };

// The best tier this CPU supports: AMX-INT8 (for prefill GEMMs; the rest as AVX-512 VNNI), else
// AVX-512 F/BW/VL/DQ + VNNI, else AVX2 + FMA + F16C, else scalar.
Isa detect_isa();
const char* isa_name(Isa isa);

}  // namespace llmint8::cpu

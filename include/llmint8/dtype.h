// Element types and the 16-bit float conversions every backend shares.
//
// fp32 -> fp16 and fp32 -> bf16 round to nearest, ties to even (IEEE default,
// what PyTorch's .to(dtype) does); NaN stays NaN, overflow becomes +-Inf.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace llmint8 {

enum class DType : uint8_t { F32, F16, BF16, I8, U8, I32, I64, F64, BOOL };

// Bytes per element.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
    case DType::I64: case DType::F64: return 8;
  }
  return 0;
}

// safetensors' spelling ("F32", "F16", "BF16", "I8", "U8", ...).
std::string_view dtype_name(DType t);
// Parses safetensors' spelling; returns false for anything else.
bool parse_dtype(std::string_view s, DType* out);

// Storage-only 16-bit float types: arithmetic happens in float.
struct f16 { uint16_t bits; };
struct bf16 { uint16_t bits; };

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float to_float(float x) { return x; }
inline float to_float(bf16 h) { return bits_to_float(uint32_t(h.bits) << 16); }
inline float to_float(f16 h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1f;
  const uint32_t man = h.bits & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // Inf/NaN
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in float
    const float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

inline bf16 to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

inline f16 to_f16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u)};        // NaN
  if (a >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};       // rounds to >= 65520: Inf
  if (a < 0x38800000u) {                                           // below the smallest normal
    // subnormal: value / 2^-24, rounded to nearest even by the float unit
    const float v = bits_to_float(a) * 16777216.0f;  // exact scaling by 2^24
    // v < 1024; nearbyint under the default rounding mode = ties-to-even
    uint32_t m = uint32_t(v);
    const float frac = v - float(m);
    if (frac > 0.5f || (frac == 0.5f && (m & 1u))) ++m;
    return f16{uint16_t(sign | m)};
  }
  // normal: re-bias the exponent, round the 13 dropped mantissa bits to even
  uint32_t r = a - 0x38000000u;  // exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return f16{uint16_t(sign | (r >> 13))};
}

template <class T> inline T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline f16 from_float<f16>(float x) { return to_f16(x); }
template <> inline bf16 from_float<bf16>(float x) { return to_bf16(x); }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<f16>() { return DType::F16; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }

}  // namespace llmint8

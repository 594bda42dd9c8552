#include "llmint8/dtype.h"

namespace llmint8 {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::F64: return "F64";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

bool parse_dtype(std::string_view s, DType* out) {
  static constexpr DType all[] = {DType::F32, DType::F16, DType::BF16, DType::I8, DType::U8,
                                  DType::I32, DType::I64, DType::F64, DType::BOOL};
  for (DType t : all)
    if (dtype_name(t) == s) { *out = t; return true; }
  return false;
}

}  // namespace llmint8

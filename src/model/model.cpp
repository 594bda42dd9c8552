// Model::load and the precision names of include/llmint8/model.h.
#include "llmint8/model.h"

#include "model/transformer.h"

namespace llmint8 {

std::string_view precision_name(Precision p) {
  switch (p) {
    case Precision::Int8: return "int8";
    case Precision::F16: return "fp16";
    case Precision::BF16: return "bf16";
    case Precision::F32: return "fp32";
  }
  return "?";
}

bool parse_precision(std::string_view s, Precision* out) {
  for (Precision p : {Precision::Int8, Precision::F16, Precision::BF16, Precision::F32})
    if (s == precision_name(p)) {
      if (out) *out = p;
      return true;
    }
  return false;
}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opts) {
  return model::load_transformer(dir, opts);
}

}  // namespace llmint8

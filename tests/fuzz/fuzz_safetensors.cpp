// Fuzz target: a whole safetensors file image (8-byte header length, JSON header, data area)
// through SafetensorsFile::parse, the validation the mmap reader runs on every file it opens.
// On success every promise of the header is checked: each tensor lies inside the buffer, its
// byte count matches shape x dtype, no two overlap, and every byte is readable (ASan checks the
// reads against the exact buffer libFuzzer hands in).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fuzz_util.h"
#include "io/safetensors.h"

using namespace llmint8;
using namespace llmint8::io;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.safetensors";
  SafetensorsHeader h;
  try {
    h = SafetensorsFile::parse(data, size, kName);
  } catch (const Error& e) {
    fuzz::check_error(e, kName);
    return 0;
  }
  std::vector<std::pair<const uint8_t*, size_t>> spans;
  for (const TensorInfo& t : h.tensors) {
    fuzz::check(!t.name.empty(), "empty tensor name accepted");
    fuzz::check(t.nbytes == 0 || (t.data >= data && t.nbytes <= size_t(data + size - t.data)),
                "tensor outside the buffer", t.name);
    const int64_t n = t.numel();
    fuzz::check(n >= 0, "negative numel", t.name);
    fuzz::check(uint64_t(n) * dtype_size(t.dtype) == t.nbytes, "nbytes != numel * dtype size",
                t.name);
    (void)t.shape_str();
    if (t.nbytes) spans.emplace_back(t.data, t.nbytes);
    if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16) {
      std::vector<float> out(static_cast<size_t>(n));
      Checkpoint::read_f32_unchecked(t, out.data());  // every byte converted
      try {
        Checkpoint::read_f32(t, out.data());  // and refused, with an Error, if not finite
      } catch (const llmint8::Error& e) {
        fuzz::check(std::string(e.what()).find("weights must be finite") != std::string::npos,
                    "read_f32 failed for another reason", t.name);
      }
    } else {
      unsigned sum = 0;
      for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
      volatile unsigned sink = sum;
      (void)sink;
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    fuzz::check(spans[i - 1].first + spans[i - 1].second <= spans[i].first, "tensors overlap");
  return 0;
}

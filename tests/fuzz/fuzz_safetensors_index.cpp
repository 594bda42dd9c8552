// Fuzz target: the text of model.safetensors.index.json through Checkpoint::parse_index, which
// maps tensors to shard files. Every accepted shard name must be a plain file name: the loader
// joins it to the checkpoint directory, so a path separator or ".." would escape it.
#include <cstdint>
#include <string_view>

#include "fuzz_util.h"
#include "io/safetensors.h"

using namespace llmint8;
using namespace llmint8::io;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz/model.safetensors.index.json";
  try {
    const auto map = Checkpoint::parse_index(
        std::string_view(reinterpret_cast<const char*>(data), size), kName);
    for (const auto& [tensor, shard] : map) {
      fuzz::check(!shard.empty() && shard != "." && shard != "..", "empty or dot shard name", shard);
      fuzz::check(shard.find('/') == std::string::npos && shard.find('\\') == std::string::npos &&
                      shard.find('\0') == std::string::npos && shard.find("..") == std::string::npos,
                  "shard name escapes the checkpoint directory", shard);
    }
  } catch (const Error& e) {
    fuzz::check_error(e, kName);
  }
  return 0;
}

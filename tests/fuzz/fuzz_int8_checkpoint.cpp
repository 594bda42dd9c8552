// Fuzz target: a bitsandbytes 8-bit checkpoint (model.safetensors with CB as the I8 `.weight`,
// `.SCB` F32 row scales and `.weight_format` U8 beside each Linear) loaded through Model::load
// with Precision::Int8 -- the safetensors validation, the shape checks against config.json and
// the 8-bit reader together. config.json is fixed (a tiny Llama: hidden 8, 2 heads, 1 layer,
// vocab 16); the input is the model.safetensors. A model that loads runs one forward pass of two
// tokens, which must give a finite-sized logits row whatever values the scales hold. The files
// live in a private directory removed at the end of the run (fuzz::private_temp_dir).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "llmint8/model.h"

using namespace llmint8;
namespace fs = std::filesystem;

namespace {

const char kConfig[] = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 2, "vocab_size": 16, "max_position_embeddings": 16,
  "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2})";

std::string make_dir() {
  const fs::path d = fuzz::private_temp_dir("int8");
  std::FILE* f = std::fopen((d / "config.json").c_str(), "wb");
  fuzz::check(f != nullptr, "cannot write config.json", d.string());
  std::fputs(kConfig, f);
  std::fclose(f);
  return d.string();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = make_dir();
  static const std::string path = dir + "/model.safetensors";
  // LLMINT8_FUZZ_VERBOSE=1: say whether each input loads (to check that seeds are valid).
  static const bool verbose = std::getenv("LLMINT8_FUZZ_VERBOSE") != nullptr;
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    fuzz::check(f != nullptr, "cannot write model.safetensors", path);
    fuzz::check(std::fwrite(data, 1, size, f) == size, "short write", path);
    std::fclose(f);
  }
  LoadOptions opts;
  opts.precision = Precision::Int8;
  opts.threads = 1;
  std::unique_ptr<Model> model;
  try {
    model = Model::load(dir, opts);
  } catch (const Error& e) {
    fuzz::check_error(e, dir);
    if (verbose) std::fprintf(stderr, "not loaded: %s\n", e.what());
    return 0;
  }
  if (verbose) std::fprintf(stderr, "loaded: %zu int8 modules\n", model->info().quantized_modules.size());
  auto session = model->new_session(4);
  std::vector<float> logits;
  const int32_t tokens[] = {1, 5};
  session->forward(tokens, &logits);
  fuzz::check(logits.size() == 16, "logits row has the wrong size");
  return 0;
}

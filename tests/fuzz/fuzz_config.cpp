// Fuzz target: config.json text through the same steps as model::load_config (JSON parse, then
// parse_config's validation). Accepted configs must keep the promises the loader relies on:
// positive sizes, heads dividing evenly, and a rotary dimension within the head.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/config.h"

using namespace llmint8;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kDir = "fuzzdir";
  static const std::string kFile = kDir + "/config.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // load_config turns this into Error("<file>: invalid JSON: ...")
  }
  try {
    const model::ModelConfig c = model::parse_config(j, kDir, kFile);
    fuzz::check(c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0 && c.num_kv_heads > 0 &&
                    c.head_dim > 0 && c.intermediate_size > 0 && c.vocab_size > 0 &&
                    c.max_positions > 0,
                "accepted a non-positive size");
    fuzz::check(c.num_heads % c.num_kv_heads == 0, "kv heads do not divide heads");
    const int64_t r = c.rotary_dim();
    fuzz::check(r >= 0 && r <= c.head_dim && r % 2 == 0, "rotary_dim outside [0, head_dim]");
  } catch (const Error& e) {
    fuzz::check_error(e, kFile);
  }
  return 0;
}

// The decoder-only transformer shared by every family: weights laid out by an ArchSpec, one
// block implementation whose wiring (norm kind, positions, residual layout, MLP kind) comes from
// the spec. Activations and the KV cache are float32 for every precision; the precision only
// decides how Linear weights are stored and multiplied (src/model/linear.h).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llmint8/backend.h"

#include "llmint8/model.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/linear.h"

namespace llmint8::model {

std::unique_ptr<Model> load_transformer(const std::string& dir, const LoadOptions& opts);

// True when the Linear `name` matches a skip entry: equal, or the entry is a run of whole
// dotted components of it ("mlp.down_proj" matches "model.layers.3.mlp.down_proj").
bool module_matches(const std::string& name, const std::string& entry);

// RoPE inverse frequencies [rotary_dim/2] as transformers computes them in float32, with the
// config's scaling ("linear", "llama3") applied.
std::vector<float> rope_inv_freq(const ModelConfig& c);
// BLOOM's ALiBi slopes per head (non power-of-2 head counts interleave a second geometric series).
std::vector<float> alibi_slopes(int64_t heads);

// The int8 weight of Linear `module` of a loaded model (tests, tools); null when that Linear is
// not held in int8 or does not exist.
const Int8Weight* find_int8_weight(const Model& m, const std::string& module);

// Read-only view of a loaded CPU transformer's prepared weights (config, spec, Linears, norms),
// so that another device (src/cuda/cuda_model.cu) reuses the checkpoint reading and weight
// preparation and only uploads. Pointers stay valid while the model lives; absent parts are null
// (Linears with an empty name(), norms with an empty w).
struct NormView {
  const std::vector<float>* w = nullptr;
  const std::vector<float>* b = nullptr;  // empty for RMSNorm
};
struct LayerView {
  NormView n1, n2;
  const Linear *q = nullptr, *k = nullptr, *v = nullptr, *qkv = nullptr, *o = nullptr;
  const Linear *gate = nullptr, *up = nullptr, *down = nullptr;
};
struct TransformerView {
  const ModelConfig* config = nullptr;
  const ArchSpec* spec = nullptr;
  float threshold = 0.f;  // resolved (checkpoint's quantization_config applied)
  const Linear* embed = nullptr;
  const Linear* pos_embed = nullptr;
  const Linear* lm_head = nullptr;  // == embed when tied
  NormView embed_norm, final_norm;
  std::vector<LayerView> layers;
  const std::vector<float>* inv_freq = nullptr;  // RoPE
  const std::vector<float>* slopes = nullptr;    // ALiBi
};
// Throws Error when `m` is not a CPU transformer.
TransformerView view_transformer(const Model& m);

// The KV-cache capacity of a new session: max_tokens, or the model's context when 0; throws
// Error when negative or past learned positions.
int64_t session_capacity(const ModelConfig& c, const ArchSpec& s, int64_t max_tokens);

// What the CPU transformer and the GPU model (src/cuda/cuda_model.cu) both answer from their
// config: the Model accessors, over the config, its ArchSpec and the ModelInfo they fill in.
class ConfiguredModel : public Model {
 public:
  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t max_context() const override { return c_.max_positions; }
  int32_t bos_id() const override { return c_.bos_id; }
  int32_t eos_id() const override { return c_.eos_ids.empty() ? -1 : c_.eos_ids[0]; }
  std::vector<int32_t> eos_ids() const override { return c_.eos_ids; }

 protected:
  ConfiguredModel() = default;
  explicit ConfiguredModel(ModelConfig c) : c_(std::move(c)), s_(arch_for(c_)) {}
  // The KV-cache capacity of a new session of this model (session_capacity).
  int64_t capacity_for(int64_t max_tokens) const { return session_capacity(c_, s_, max_tokens); }

  ModelConfig c_;
  ArchSpec s_;
  ModelInfo info_;
};

// Current and peak resident set size of this process in bytes (from /proc/self/status).
uint64_t peak_rss_bytes();

}  // namespace llmint8::model

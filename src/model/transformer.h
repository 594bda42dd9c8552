// The decoder-only transformer shared by every family: weights laid out by an ArchSpec, one
// block implementation whose wiring (norm kind, positions, residual layout, MLP kind) comes from
// the spec. Activations and the KV cache are float32 for every precision; the precision only
// decides how Linear weights are stored and multiplied (src/model/linear.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "llmint8/backend.h"

#include "llmint8/model.h"
#include "model/arch.h"
#include "model/config.h"

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

// Current and peak resident set size of this process in bytes (from /proc/self/status).
uint64_t peak_rss_bytes();

}  // namespace llmint8::model

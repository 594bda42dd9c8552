// config.json of a Hugging Face causal-LM directory, normalised across the families' spellings
// (GPT-2's n_embd/n_layer/n_head, BLOOM's n_embed, OPT's ffn_dim, NeoX's rotary_pct, ...).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace llmint8::model {

enum class Family { Llama, Qwen2, OPT, GPT2, GPTNeoX, Bloom };

// RoPE frequency scaling (config "rope_scaling" / "rope_parameters").
struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;    // llama3
  double original_max_position_embeddings = 8192.0;        // llama3
};

struct ModelConfig {
  std::string dir;           // the model directory (for messages)
  std::string file;          // "<dir>/config.json"
  std::string model_type;    // "llama", "gpt2", ...
  std::string architecture;  // "LlamaForCausalLM", ...
  Family family = Family::Llama;

  int64_t hidden_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t intermediate_size = 0, vocab_size = 0, max_positions = 0;
  double norm_eps = 1e-5;

  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;  // fraction of head_dim that is rotated
  RopeScaling rope_scaling;

  bool tie_word_embeddings = false;
  int32_t bos_id = -1;
  // generation_config.json's eos_token_id when given (what generate() stops on), else
  // config.json's; empty when neither has one.
  std::vector<int32_t> eos_ids;
  std::string activation;        // normalised: "silu", "gelu", "gelu_tanh", "relu", "quick_gelu"

  // Biases (true = the Linear has one).
  bool qkv_bias = false, o_bias = false, mlp_bias = false;

  // Family switches.
  bool do_layer_norm_before = true;          // OPT (false = post-norm, OPT-350m)
  bool remove_final_layer_norm = false;      // OPT's _remove_final_layer_norm
  bool parallel_residual = false;            // NeoX use_parallel_residual
  bool residual_post_layernorm = false;      // BLOOM apply_residual_connection_post_layernorm
  bool scale_attn_weights = true;            // GPT-2
  bool scale_attn_by_inverse_layer_idx = false;  // GPT-2
  int64_t sliding_window = 0;                // Mistral; 0 = full attention

  int64_t rotary_dim() const;  // even number of rotated dims per head
};

// Parses and validates <dir>/config.json (and the eos ids of <dir>/generation_config.json when
// present); throws Error("<dir>/config.json: ...").
ModelConfig load_config(const std::string& dir);
// Same from an already parsed document (tests); `file` names it in messages.
ModelConfig parse_config(const nlohmann::json& j, const std::string& dir, const std::string& file);

// "LlamaForCausalLM, MistralForCausalLM, ..."
std::string supported_architectures();

}  // namespace llmint8::model

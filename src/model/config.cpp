#include "model/config.h"

#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>

#include "io/read_file.h"
#include "llmint8/error.h"

namespace llmint8::model {
namespace {

using nlohmann::json;

struct KnownArch {
  const char* architecture;
  const char* model_type;
  Family family;
};
// The architectures whose tensors and wiring src/model/arch.cpp describes.
constexpr KnownArch kKnown[] = {
    {"LlamaForCausalLM", "llama", Family::Llama},
    {"MistralForCausalLM", "mistral", Family::Llama},
    {"Qwen2ForCausalLM", "qwen2", Family::Qwen2},
    {"OPTForCausalLM", "opt", Family::OPT},
    {"GPT2LMHeadModel", "gpt2", Family::GPT2},
    {"GPTNeoXForCausalLM", "gpt_neox", Family::GPTNeoX},
    {"BloomForCausalLM", "bloom", Family::Bloom},
};

// Reads config fields under any of their family spellings, with messages naming the file.
class Fields {
 public:
  Fields(const json& j, const std::string& file) : j_(j), file_(file) {}

  const json* find(std::initializer_list<const char*> keys) const {
    for (const char* k : keys) {
      auto it = j_.find(k);
      if (it != j_.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }
  bool has(std::initializer_list<const char*> keys) const { return find(keys) != nullptr; }

  int64_t integer(std::initializer_list<const char*> keys, int64_t def, bool required = false) const {
    const json* v = find(keys);
    if (!v) {
      if (required) fail("missing field '" + std::string(*keys.begin()) + "'");
      return def;
    }
    if (v->is_number_integer() || v->is_number_unsigned()) return v->get<int64_t>();
    // A whole float converts only inside int64's range (outside it the cast is undefined).
    if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
        std::fabs(v->get<double>()) < 9.2e18)
      return int64_t(v->get<double>());
    fail("field '" + key_of(keys) + "' must be an integer, got " + v->dump());
  }
  double number(std::initializer_list<const char*> keys, double def) const {
    const json* v = find(keys);
    if (!v) return def;
    if (!v->is_number()) fail("field '" + key_of(keys) + "' must be a number, got " + v->dump());
    return v->get<double>();
  }
  bool boolean(std::initializer_list<const char*> keys, bool def) const {
    const json* v = find(keys);
    if (!v) return def;
    if (!v->is_boolean()) fail("field '" + key_of(keys) + "' must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(std::initializer_list<const char*> keys, const std::string& def) const {
    const json* v = find(keys);
    if (!v) return def;
    if (!v->is_string()) fail("field '" + key_of(keys) + "' must be a string, got " + v->dump());
    return v->get<std::string>();
  }
  [[noreturn]] void fail(const std::string& what) const { throw Error(file_ + ": " + what); }

 private:
  std::string key_of(std::initializer_list<const char*> keys) const {
    for (const char* k : keys)
      if (j_.contains(k)) return k;
    return *keys.begin();
  }
  const json& j_;
  const std::string& file_;
};

int32_t token_id(const Fields& f, std::initializer_list<const char*> keys, int32_t def) {
  const int64_t v = f.integer(keys, def);
  if (v < -1 || v > INT32_MAX) f.fail("token id " + std::to_string(v) + " out of range");
  return int32_t(v);
}

// An id or a list of ids (eos_token_id).
std::vector<int32_t> token_ids(const Fields& f, const char* key) {
  std::vector<int32_t> out;
  const json* e = f.find({key});
  if (!e) return out;
  auto one = [&](const json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      f.fail(std::string(key) + " must be a non-negative id or a list of them, got " + e->dump());
    out.push_back(v.get<int32_t>());
  };
  if (e->is_array()) {
    for (const auto& v : *e) one(v);
  } else {
    one(*e);
  }
  return out;
}

json read_json_file(const std::string& file) {
  const std::string text = io::read_file_capped(file, io::kMaxConfigFileBytes);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(file + ": invalid JSON: " + std::string(e.what()));
  }
}

std::string normalise_activation(const std::string& act, const std::string& file) {
  if (act == "silu" || act == "swish") return "silu";
  if (act == "gelu") return "gelu";
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") return "gelu_tanh";
  if (act == "relu") return "relu";
  if (act == "quick_gelu") return "quick_gelu";
  throw Error(file + ": unsupported activation '" + act +
              "' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, quick_gelu)");
}

void parse_rope(const json& j, ModelConfig& c, const Fields& f) {
  // transformers >= 5 nests these under rope_parameters; older configs use rope_theta and
  // rope_scaling at the top level (NeoX: rotary_emb_base, rotary_pct).
  const json* rp = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) rp = &*it;
  const json* rs = nullptr;
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) rs = &*it;

  c.rope_theta = f.number({"rope_theta", "rotary_emb_base"}, 10000.0);
  const double default_partial = c.family == Family::GPTNeoX ? 0.25 : 1.0;
  c.partial_rotary_factor = f.number({"partial_rotary_factor", "rotary_pct"}, default_partial);

  auto number_in = [&](const json& o, const char* key, double def) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return def;
    if (!it->is_number()) f.fail(std::string("field '") + key + "' must be a number, got " + it->dump());
    return it->get<double>();
  };
  auto scaling_from = [&](const json& o) {
    std::string type = "default";
    for (const char* key : {"rope_type", "type"}) {
      auto it = o.find(key);
      if (it != o.end() && it->is_string()) { type = it->get<std::string>(); break; }
    }
    if (type != "default" && type != "linear" && type != "llama3")
      f.fail("unsupported rope scaling type '" + type + "' (supported: default, linear, llama3)");
    c.rope_scaling.type = type;
    c.rope_scaling.factor = number_in(o, "factor", 1.0);
    c.rope_scaling.low_freq_factor = number_in(o, "low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = number_in(o, "high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        number_in(o, "original_max_position_embeddings", 8192.0);
  };
  if (rp) {
    c.rope_theta = number_in(*rp, "rope_theta", c.rope_theta);
    c.partial_rotary_factor = number_in(*rp, "partial_rotary_factor", c.partial_rotary_factor);
    scaling_from(*rp);
  }
  if (rs) scaling_from(*rs);
  if (!(c.rope_theta > 0)) f.fail("rope_theta must be positive");
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1))
    f.fail("partial_rotary_factor/rotary_pct must be in (0, 1]");
  if (!(c.rope_scaling.factor > 0)) f.fail("rope scaling factor must be positive");
  if (c.rope_scaling.type == "llama3" &&
      !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor &&
        c.rope_scaling.low_freq_factor > 0 && c.rope_scaling.original_max_position_embeddings > 0))
    f.fail("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor");
}

}  // namespace

int64_t ModelConfig::rotary_dim() const {
  // NeoX: rotary_ndims = int(head_size * rotary_pct); Llama-style: int(head_dim * factor).
  int64_t d = int64_t(double(head_dim) * partial_rotary_factor);
  return d - (d % 2);
}

std::string supported_architectures() {
  std::string s;
  for (const auto& k : kKnown) {
    if (!s.empty()) s += ", ";
    s += k.architecture;
  }
  return s;
}

ModelConfig parse_config(const json& j, const std::string& dir, const std::string& file) {
  if (!j.is_object()) throw Error(file + ": not a JSON object");
  ModelConfig c;
  c.dir = dir;
  c.file = file;
  Fields f(j, file);

  // Family: model_type first, then architectures[0]; both must be known when present.
  c.model_type = f.string({"model_type"}, "");
  std::string arch;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() &&
                                         (*it)[0].is_string())
    arch = (*it)[0].get<std::string>();
  const KnownArch* known = nullptr;
  for (const auto& k : kKnown)
    if (!c.model_type.empty() ? c.model_type == k.model_type : arch == k.architecture) known = &k;
  const bool arch_ok = arch.empty() || (known && arch == known->architecture);
  if (!known || !arch_ok)
    throw Error(file + ": unsupported architecture '" +
                (!arch.empty() ? arch : (c.model_type.empty() ? std::string("<none>") : c.model_type)) +
                "' (supported: " + supported_architectures() + ")");
  c.family = known->family;
  c.architecture = known->architecture;
  c.model_type = known->model_type;

  const Family fam = c.family;
  c.hidden_size = f.integer({"hidden_size", "n_embd", "n_embed", "d_model"}, 0, true);
  c.num_layers = f.integer({"num_hidden_layers", "n_layer", "num_layers"}, 0, true);
  c.num_heads = f.integer({"num_attention_heads", "n_head"}, 0, true);
  c.num_kv_heads = f.integer({"num_key_value_heads"}, c.num_heads);
  c.vocab_size = f.integer({"vocab_size"}, 0, true);
  if (c.hidden_size <= 0) f.fail("hidden_size must be positive, got " + std::to_string(c.hidden_size));
  if (c.num_layers <= 0) f.fail("num_hidden_layers must be positive, got " + std::to_string(c.num_layers));
  if (c.num_heads <= 0)
    f.fail("num_attention_heads must be positive, got " + std::to_string(c.num_heads));
  if (c.num_kv_heads <= 0)
    f.fail("num_key_value_heads must be positive, got " + std::to_string(c.num_kv_heads));
  if (c.vocab_size <= 0) f.fail("vocab_size must be positive, got " + std::to_string(c.vocab_size));
  // Before 4 * hidden_size (a default below) can overflow; the same bound is checked with the
  // others at the end.
  if (c.hidden_size > (int64_t(1) << 24))
    f.fail("hidden_size (" + std::to_string(c.hidden_size) + ") is implausibly large (> " +
           std::to_string(int64_t(1) << 24) + ")");

  const bool explicit_head_dim = (fam == Family::Llama || fam == Family::Qwen2) && f.has({"head_dim"});
  if (explicit_head_dim) {
    c.head_dim = f.integer({"head_dim"}, 0);
    if (c.head_dim <= 0) f.fail("head_dim must be positive, got " + std::to_string(c.head_dim));
  } else {
    if (c.hidden_size % c.num_heads != 0)
      f.fail("num_attention_heads (" + std::to_string(c.num_heads) + ") does not divide hidden_size (" +
             std::to_string(c.hidden_size) + ")");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.num_heads % c.num_kv_heads != 0)
    f.fail("num_key_value_heads (" + std::to_string(c.num_kv_heads) +
           ") does not divide num_attention_heads (" + std::to_string(c.num_heads) + ")");
  if (fam != Family::Llama && fam != Family::Qwen2 && c.num_kv_heads != c.num_heads)
    f.fail(c.model_type + " has no grouped-query attention: num_key_value_heads must equal num_attention_heads");

  // Feed-forward width.
  switch (fam) {
    case Family::OPT: c.intermediate_size = f.integer({"ffn_dim"}, 0, true); break;
    case Family::GPT2: c.intermediate_size = f.integer({"n_inner"}, 4 * c.hidden_size); break;
    case Family::Bloom: c.intermediate_size = 4 * c.hidden_size; break;
    case Family::GPTNeoX:
      c.intermediate_size = f.integer({"intermediate_size"}, 4 * c.hidden_size);
      break;
    default: c.intermediate_size = f.integer({"intermediate_size"}, 0, true);
  }
  if (c.intermediate_size <= 0)
    f.fail("intermediate size must be positive, got " + std::to_string(c.intermediate_size));

  // Context length; BLOOM (ALiBi) has no learned limit: seq_length when given, else 2048.
  c.max_positions = f.integer({"max_position_embeddings", "n_positions", "seq_length"},
                              fam == Family::Bloom ? 2048 : 0, fam != Family::Bloom);
  if (c.max_positions <= 0)
    f.fail("max_position_embeddings must be positive, got " + std::to_string(c.max_positions));

  c.norm_eps = f.number({"rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"}, 1e-5);
  if (!(c.norm_eps >= 0)) f.fail("norm epsilon must be non-negative");

  // Defaults of tie_word_embeddings follow each transformers config class.
  const bool tie_default = fam == Family::OPT || fam == Family::GPT2 || fam == Family::Bloom;
  c.tie_word_embeddings = f.boolean({"tie_word_embeddings"}, tie_default);

  c.bos_id = token_id(f, {"bos_token_id"}, -1);
  c.eos_ids = token_ids(f, "eos_token_id");

  switch (fam) {
    case Family::Llama:
    case Family::Qwen2:
      c.activation = normalise_activation(f.string({"hidden_act"}, "silu"), file);
      break;
    case Family::OPT: c.activation = normalise_activation(f.string({"activation_function"}, "relu"), file); break;
    case Family::GPT2: c.activation = normalise_activation(f.string({"activation_function"}, "gelu_new"), file); break;
    case Family::GPTNeoX: c.activation = normalise_activation(f.string({"hidden_act"}, "gelu"), file); break;
    case Family::Bloom: c.activation = "gelu_tanh"; break;  // bloom_gelu_forward, fixed
  }

  switch (fam) {
    case Family::Llama:
      c.qkv_bias = c.o_bias = f.boolean({"attention_bias"}, false);
      c.mlp_bias = f.boolean({"mlp_bias"}, false);
      if (c.model_type == "mistral") c.sliding_window = f.integer({"sliding_window"}, 0);
      break;
    case Family::Qwen2:  // q/k/v always carry a bias, o_proj and the MLP never
      c.qkv_bias = true;
      if (f.boolean({"use_sliding_window"}, false))
        f.fail("use_sliding_window=true is not supported for qwen2");
      break;
    case Family::OPT: {
      c.qkv_bias = c.o_bias = c.mlp_bias = f.boolean({"enable_bias"}, true);
      c.do_layer_norm_before = f.boolean({"do_layer_norm_before"}, true);
      c.remove_final_layer_norm = f.boolean({"_remove_final_layer_norm"}, false);
      const int64_t proj = f.integer({"word_embed_proj_dim"}, c.hidden_size);
      if (proj != c.hidden_size)
        f.fail("word_embed_proj_dim (" + std::to_string(proj) + ") != hidden_size (" +
               std::to_string(c.hidden_size) + ") is not supported (project_in/project_out)");
      if (!f.boolean({"layer_norm_elementwise_affine"}, true))
        f.fail("layer_norm_elementwise_affine=false is not supported");
      break;
    }
    case Family::GPT2:
      c.qkv_bias = c.o_bias = c.mlp_bias = true;
      c.scale_attn_weights = f.boolean({"scale_attn_weights"}, true);
      c.scale_attn_by_inverse_layer_idx = f.boolean({"scale_attn_by_inverse_layer_idx"}, false);
      break;
    case Family::GPTNeoX:
      c.qkv_bias = c.o_bias = f.boolean({"attention_bias"}, true);
      c.mlp_bias = true;
      c.parallel_residual = f.boolean({"use_parallel_residual"}, true);
      break;
    case Family::Bloom:
      c.qkv_bias = c.o_bias = c.mlp_bias = true;
      c.residual_post_layernorm = f.boolean({"apply_residual_connection_post_layernorm"}, false);
      break;
  }
  if (c.sliding_window < 0) f.fail("sliding_window must be non-negative");
  // Bounds far above any real model, so that no size product below can overflow.
  const int64_t kMax = int64_t(1) << 24;
  auto bounded = [&](const char* what, int64_t v) {
    if (v > kMax) f.fail(std::string(what) + " (" + std::to_string(v) + ") is implausibly large (> " + std::to_string(kMax) + ")");
  };
  bounded("hidden_size", c.hidden_size);
  bounded("num_hidden_layers", c.num_layers);
  bounded("num_attention_heads * head_dim", c.num_heads > kMax || c.head_dim > kMax ? kMax + 1 : c.num_heads * c.head_dim);
  bounded("intermediate size", c.intermediate_size);
  bounded("vocab_size", c.vocab_size);
  bounded("max_position_embeddings", c.max_positions);

  if (fam != Family::OPT && fam != Family::GPT2 && fam != Family::Bloom) parse_rope(j, c, f);
  if (fam == Family::Llama || fam == Family::Qwen2 || fam == Family::GPTNeoX) {
    if (c.rotary_dim() <= 0)
      f.fail("rotary dimension int(head_dim * partial_rotary_factor) is 0 for head_dim " +
             std::to_string(c.head_dim));
  }

  // A pre-quantized checkpoint (transformers + bitsandbytes, load_in_8bit) records its threshold.
  if (j.contains("quantization_config")) {
    const json& q = j["quantization_config"];
    if (!q.is_object()) f.fail("quantization_config must be an object");
    // Typed reads only: a wrong JSON type is a config error, never a library exception.
    auto flag = [&](const char* k) {
      if (!q.contains(k) || q[k].is_null()) return false;
      if (!q[k].is_boolean()) f.fail(std::string("quantization_config: ") + k + " must be true or false");
      return q[k].get<bool>();
    };
    std::string method;
    if (q.contains("quant_method")) {
      if (!q["quant_method"].is_string()) f.fail("quantization_config: quant_method must be a string");
      method = q["quant_method"].get<std::string>();
    }
    if (method != "bitsandbytes" || flag("load_in_4bit") || !flag("load_in_8bit"))
      f.fail("quantization_config: only bitsandbytes load_in_8bit checkpoints are supported (quant_method '" +
             method + "')");
    const json& t = q.contains("llm_int8_threshold") ? q["llm_int8_threshold"] : json(6.0);
    if (!t.is_number() || !(t.get<double>() >= 0) || !std::isfinite(t.get<double>()))
      f.fail("quantization_config: llm_int8_threshold must be a number >= 0");
    c.int8_threshold = float(t.get<double>());
  }
  return c;
}

ModelConfig load_config(const std::string& dir) {
  const std::string file = dir + "/config.json";
  if (!io::path_exists(file))
    throw Error(file + ": cannot open (is '" + dir + "' a Hugging Face model directory?)");
  ModelConfig c = parse_config(read_json_file(file), dir, file);
  const std::string gen = dir + "/generation_config.json";
  if (io::path_exists(gen)) {
    const json g = read_json_file(gen);
    if (!g.is_object()) throw Error(gen + ": not a JSON object");
    std::vector<int32_t> eos = token_ids(Fields(g, gen), "eos_token_id");
    if (!eos.empty()) c.eos_ids = std::move(eos);
  }
  return c;
}

}  // namespace llmint8::model

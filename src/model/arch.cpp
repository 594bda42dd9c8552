#include "model/arch.h"

namespace llmint8::model {
namespace {

ArchSpec llama_like(Family f) {
  ArchSpec s;
  s.family = f;
  s.base_prefix = "model.";
  s.embed = "model.embed_tokens.weight";
  s.final_norm = "model.norm";
  s.lm_head = "lm_head";
  s.layer_prefix = "model.layers.{i}.";
  s.norm1 = "input_layernorm";
  s.norm2 = "post_attention_layernorm";
  s.qkv = QkvLayout::Separate;
  s.q = "self_attn.q_proj";
  s.k = "self_attn.k_proj";
  s.v = "self_attn.v_proj";
  s.o = "self_attn.o_proj";
  s.mlp = MlpKind::Gated;
  s.gate = "mlp.gate_proj";
  s.up = "mlp.up_proj";
  s.down = "mlp.down_proj";
  s.norm = NormKind::RMSNorm;
  s.pos = PosKind::RoPE;
  return s;
}

ArchSpec opt() {
  ArchSpec s;
  s.family = Family::OPT;
  s.base_prefix = "model.";
  s.embed = "model.decoder.embed_tokens.weight";
  s.pos_embed = "model.decoder.embed_positions.weight";
  s.pos_offset = 2;
  s.final_norm = "model.decoder.final_layer_norm";
  s.lm_head = "lm_head";
  s.layer_prefix = "model.decoder.layers.{i}.";
  s.norm1 = "self_attn_layer_norm";
  s.norm2 = "final_layer_norm";
  s.qkv = QkvLayout::Separate;
  s.q = "self_attn.q_proj";
  s.k = "self_attn.k_proj";
  s.v = "self_attn.v_proj";
  s.o = "self_attn.out_proj";
  s.mlp = MlpKind::Plain;
  s.up = "fc1";
  s.down = "fc2";
  s.norm = NormKind::LayerNorm;
  s.pos = PosKind::Learned;
  return s;
}

ArchSpec gpt2() {
  ArchSpec s;
  s.family = Family::GPT2;
  s.base_prefix = "transformer.";
  s.embed = "transformer.wte.weight";
  s.pos_embed = "transformer.wpe.weight";
  s.final_norm = "transformer.ln_f";
  s.lm_head = "lm_head";
  s.layer_prefix = "transformer.h.{i}.";
  s.norm1 = "ln_1";
  s.norm2 = "ln_2";
  s.qkv = QkvLayout::FusedConcat;
  s.qkv_fused = "attn.c_attn";
  s.o = "attn.c_proj";
  s.mlp = MlpKind::Plain;
  s.up = "mlp.c_fc";
  s.down = "mlp.c_proj";
  s.conv1d = true;
  s.norm = NormKind::LayerNorm;
  s.pos = PosKind::Learned;
  return s;
}

ArchSpec neox() {
  ArchSpec s;
  s.family = Family::GPTNeoX;
  s.base_prefix = "gpt_neox.";
  s.embed = "gpt_neox.embed_in.weight";
  s.final_norm = "gpt_neox.final_layer_norm";
  s.lm_head = "embed_out";
  s.layer_prefix = "gpt_neox.layers.{i}.";
  s.norm1 = "input_layernorm";
  s.norm2 = "post_attention_layernorm";
  s.qkv = QkvLayout::FusedPerHead;
  s.qkv_fused = "attention.query_key_value";
  s.o = "attention.dense";
  s.mlp = MlpKind::Plain;
  s.up = "mlp.dense_h_to_4h";
  s.down = "mlp.dense_4h_to_h";
  s.norm = NormKind::LayerNorm;
  s.pos = PosKind::RoPE;
  return s;
}

ArchSpec bloom() {
  ArchSpec s;
  s.family = Family::Bloom;
  s.base_prefix = "transformer.";
  s.embed = "transformer.word_embeddings.weight";
  s.embed_norm = "transformer.word_embeddings_layernorm";
  s.final_norm = "transformer.ln_f";
  s.lm_head = "lm_head";
  s.layer_prefix = "transformer.h.{i}.";
  s.norm1 = "input_layernorm";
  s.norm2 = "post_attention_layernorm";
  s.qkv = QkvLayout::FusedPerHead;
  s.qkv_fused = "self_attention.query_key_value";
  s.o = "self_attention.dense";
  s.mlp = MlpKind::Plain;
  s.up = "mlp.dense_h_to_4h";
  s.down = "mlp.dense_4h_to_h";
  s.norm = NormKind::LayerNorm;
  s.pos = PosKind::ALiBi;
  return s;
}

}  // namespace

ArchSpec arch_for(const ModelConfig& c) {
  ArchSpec s;
  switch (c.family) {
    case Family::Llama:
    case Family::Qwen2: s = llama_like(c.family); break;
    case Family::OPT: s = opt(); break;
    case Family::GPT2: s = gpt2(); break;
    case Family::GPTNeoX: s = neox(); break;
    case Family::Bloom: s = bloom(); break;
  }
  if (c.family == Family::OPT) {
    if (!c.do_layer_norm_before) s.block = BlockKind::PostNorm;
    // transformers builds the decoder's final LayerNorm only for pre-norm OPT.
    if (!c.do_layer_norm_before || c.remove_final_layer_norm) s.final_norm.clear();
  }
  if (c.family == Family::GPTNeoX && c.parallel_residual) s.block = BlockKind::Parallel;
  s.residual_post_layernorm = c.residual_post_layernorm;
  return s;
}

std::string layer_name(const std::string& tmpl, int64_t i) {
  std::string out = tmpl;
  const auto p = out.find("{i}");
  if (p != std::string::npos) out.replace(p, 3, std::to_string(i));
  return out;
}

std::vector<std::string> quantizable_linears(const ArchSpec& s, const ModelConfig& c) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_name(s.layer_prefix, l);
    if (s.qkv == QkvLayout::Separate) {
      out.push_back(p + s.q);
      out.push_back(p + s.k);
      out.push_back(p + s.v);
    } else {
      out.push_back(p + s.qkv_fused);
    }
    out.push_back(p + s.o);
    if (s.mlp == MlpKind::Gated) out.push_back(p + s.gate);
    out.push_back(p + s.up);
    out.push_back(p + s.down);
  }
  return out;
}

std::vector<ExpectedTensor> expected_tensors(const ArchSpec& s, const ModelConfig& c) {
  const int64_t H = c.hidden_size, V = c.vocab_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t qd = c.num_heads * D, kvd = c.num_kv_heads * D;
  std::vector<ExpectedTensor> out;
  auto norm = [&](const std::string& prefix) {
    out.push_back({prefix + ".weight", {H}});
    if (s.norm == NormKind::LayerNorm) out.push_back({prefix + ".bias", {H}});
  };
  auto linear = [&](const std::string& module, int64_t o, int64_t i, bool bias, bool conv1d) {
    out.push_back({module + ".weight", conv1d ? std::vector<int64_t>{i, o} : std::vector<int64_t>{o, i}});
    if (bias) out.push_back({module + ".bias", {o}});
  };
  out.push_back({s.embed, {V, H}});
  if (!s.pos_embed.empty()) out.push_back({s.pos_embed, {c.max_positions + s.pos_offset, H}});
  if (!s.embed_norm.empty()) norm(s.embed_norm);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_name(s.layer_prefix, l);
    norm(p + s.norm1);
    if (s.qkv == QkvLayout::Separate) {
      linear(p + s.q, qd, H, c.qkv_bias, s.conv1d);
      linear(p + s.k, kvd, H, c.qkv_bias, s.conv1d);
      linear(p + s.v, kvd, H, c.qkv_bias, s.conv1d);
    } else {
      linear(p + s.qkv_fused, qd + 2 * kvd, H, c.qkv_bias, s.conv1d);
    }
    linear(p + s.o, H, qd, c.o_bias, s.conv1d);
    norm(p + s.norm2);
    if (s.mlp == MlpKind::Gated) linear(p + s.gate, I, H, c.mlp_bias, s.conv1d);
    linear(p + s.up, I, H, c.mlp_bias, s.conv1d);
    linear(p + s.down, H, I, c.mlp_bias, s.conv1d);
  }
  if (!s.final_norm.empty()) norm(s.final_norm);
  if (!c.tie_word_embeddings) linear(s.lm_head, V, H, false, false);  // an nn.Linear, also in GPT-2
  return out;
}

}  // namespace llmint8::model

// Architectures as data: one ArchSpec per family names the checkpoint tensors ({i} = layer
// index) and picks the wiring of the one shared transformer block (src/model/transformer.cpp).
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace llmint8::model {

enum class NormKind { RMSNorm, LayerNorm };           // LayerNorm carries a bias
enum class PosKind { RoPE, Learned, ALiBi };
// PreNorm: x += attn(n1(x)); x += mlp(n2(x)).
// Parallel (NeoX use_parallel_residual): x = x + attn(n1(x)) + mlp(n2(x)).
// PostNorm (OPT do_layer_norm_before=false): x = n1(x + attn(x)); x = n2(x + mlp(x)).
enum class BlockKind { PreNorm, Parallel, PostNorm };
// How q, k and v are stored:
//  Separate: q_proj / k_proj / v_proj.
//  FusedConcat: one [q | k | v] projection along the output (GPT-2 c_attn).
//  FusedPerHead: one projection whose outputs are [heads, 3, head_dim] (NeoX, BLOOM
//    query_key_value); rows are reordered to [3, heads, head_dim] at load so that every fused
//    projection yields q | k | v.
enum class QkvLayout { Separate, FusedConcat, FusedPerHead };
enum class MlpKind { Gated, Plain };  // Gated: down(act(gate(x)) * up(x)); Plain: down(act(up(x)))

struct ArchSpec {
  Family family = Family::Llama;
  // The base model's prefix ("model.", "transformer.", "gpt_neox."); checkpoints saved from the
  // base model class (e.g. the original "gpt2" or "bigscience/bloom-560m") lack it.
  std::string base_prefix;
  // Whole-model tensors (full names, including base_prefix). Empty = absent.
  std::string embed;         // [vocab, hidden]
  std::string pos_embed;     // learned positions [max_positions + pos_offset, hidden]
  int64_t pos_offset = 0;    // OPT's embed_positions start at 2
  std::string embed_norm;    // BLOOM word_embeddings_layernorm (prefix; ".weight"/".bias" added)
  std::string final_norm;    // prefix
  std::string lm_head;       // untied output projection (Linear name)
  // Per-layer names relative to layer_prefix.
  std::string layer_prefix;  // "model.layers.{i}."
  std::string norm1, norm2;  // prefixes
  QkvLayout qkv = QkvLayout::Separate;
  std::string q, k, v, qkv_fused, o;  // Linear names
  MlpKind mlp = MlpKind::Gated;
  std::string gate, up, down;  // Plain uses up and down
  bool conv1d = false;         // GPT-2's Conv1D stores weights [in, out]

  // From the config.
  NormKind norm = NormKind::RMSNorm;
  PosKind pos = PosKind::RoPE;
  BlockKind block = BlockKind::PreNorm;
  bool residual_post_layernorm = false;  // BLOOM option: residual taken after the norm
};

// The spec of the config's family with the config's switches applied.
ArchSpec arch_for(const ModelConfig& c);

// "model.layers.{i}.mlp" with i substituted.
std::string layer_name(const std::string& tmpl, int64_t i);

// The Linear modules LLM.int8() converts, full names with the base prefix, in checkpoint order:
// every attention and MLP projection of every layer. lm_head and the (tied) embeddings are not
// among them: they stay in 16-bit.
std::vector<std::string> quantizable_linears(const ArchSpec& s, const ModelConfig& c);

// One tensor a 16/32-bit checkpoint of the config must hold, with the shape the loader reads it
// with (src/model/transformer.cpp): embeddings, norms, every Linear's weight (GPT-2's Conv1D as
// [in, out]) and bias, an untied lm_head. Full names, with the base prefix.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> expected_tensors(const ArchSpec& s, const ModelConfig& c);

}  // namespace llmint8::model

// Text generation and perplexity on top of Model + Tokenizer.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmint8/model.h"
#include "llmint8/tokenizer.h"

namespace llmint8 {

struct SamplingOptions {
  bool greedy = false;
  float temperature = 1.0f;  // <= 0 means greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
};

// Picks the next token from one row of logits.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opts);
  int32_t sample(std::span<const float> logits);

 private:
  SamplingOptions opts_;
  uint64_t state_;
};

struct GenerateOptions {
  int max_new_tokens = 128;
  SamplingOptions sampling;
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> new_ids;
  std::string text;  // decoded new tokens
  bool stopped_at_eos = false;
  double prefill_seconds = 0, decode_seconds = 0;
};

// An empty prompt starts from BOS alone. on_text receives each newly decodable piece of text as
// it is produced (pieces concatenate to result.text).
GenerateResult generate(Model& model, const Tokenizer& tok, std::string_view prompt,
                        const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text = {});

struct PerplexityResult {
  double ppl = 0;
  double nll_sum = 0;
  int64_t tokens_scored = 0;
};

// The protocol of shared/reference/stories260K_reference.json: non-overlapping windows of `ctx`
// consecutive tokens, each scored alone; ppl = exp(sum NLL of positions 1..len-1 of every window /
// count). progress(windows done, windows total).
PerplexityResult perplexity(Model& model, std::span<const int32_t> tokens, int64_t ctx,
                            const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace llmint8

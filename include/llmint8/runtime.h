// Text generation and perplexity on top of Model + Tokenizer.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
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
//  * greedy (or temperature <= 0): argmax, the lowest index on ties.
//  * otherwise, in Hugging Face's order: logits / temperature, then top-k (the k largest; ties
//    broken towards the lower index), then top-p (the smallest prefix of the descending softmax
//    whose mass reaches p), renormalised, and one draw from a xoshiro256** stream seeded by
//    splitmix64(seed): the same seed gives the same tokens.
// Throws Error on an empty row, a row without any finite logit, or options out of range
// (top_k < 0, top_p outside (0, 1], NaN temperature).
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opts);
  int32_t sample(std::span<const float> logits);
  // The distribution sample() draws from (after temperature, top-k, top-p), one probability per
  // logit; zeros for the tokens filtered out. Greedy: 1 at the argmax.
  std::vector<double> distribution(std::span<const float> logits) const;
  // Next raw 64-bit value of the generator (exposed for tests).
  uint64_t next_u64();

 private:
  SamplingOptions opts_;
  uint64_t s_[4];  // xoshiro256** state
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
  // prefill: the forward over the prompt and the first pick; decode: every later forward and
  // pick (decode_steps of them: the last new token is never fed back). Text streaming excluded.
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0;
};

// An empty prompt starts from BOS alone; otherwise the prompt is encoded with special tokens.
// max_new_tokens is capped so that prompt + new tokens fit the model's context; a prompt that
// fills the context throws Error. Any EOS (Model::eos_ids() or the tokenizer's) ends generation when
// stop_at_eos and is kept as the last new id. result.text is the continuation: the decoded
// prompt+new ids less the decoded prompt (so a leading space of the first new word is kept).
// on_text receives each newly decodable piece of text as it is produced, holding back text that
// ends in an incomplete UTF-8 / byte-fallback sequence (pieces concatenate to result.text).
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

struct CalibrationOptions {
  // Most columns kept per Linear; 0 = max(8, ceil(in_features / 100)).
  int64_t max_kept_columns = 0;
  std::function<void(int64_t, int64_t)> progress;  // (windows done, windows total)
};

// The calibration pass of --keep-outlier-columns (LoadOptions::kept_columns). Loads the model in
// `dir` with `opts` as a plain LLM.int8() model (precision Int8, no kept columns), runs `tokens`
// through it in non-overlapping windows of the model's context, each from an empty cache, and
// records for every Linear held in int8 the input columns in which some token reaches
// |x| >= the model's threshold (the columns the decomposition takes out at run time). Per Linear
// it returns at most max_kept_columns of them, ascending: those reached by the most tokens (ties:
// larger max |x|, then lower index). Linears without any such column are absent. Throws Error when
// tokens is empty, the threshold is 0, or `dir` is already an 8-bit checkpoint.
std::map<std::string, std::vector<int32_t>> calibrate_kept_columns(const std::string& dir, LoadOptions opts,
                                                                   std::span<const int32_t> tokens,
                                                                   const CalibrationOptions& c = {});

}  // namespace llmint8

// Zero-shot evaluation with lm-evaluation-harness's definitions (v0.4 task configs), to show that
// int8 inference matches 16/32-bit inference on standard tasks.
//
//   lambada_openai: context = text up to its last space, continuation = " " + last word;
//                   acc = every continuation token is the argmax (is_greedy);
//                   perplexity = exp(-mean loglikelihood of the continuation).
//   piqa:           "Question: {goal}\nAnswer:" + " {sol1|sol2}"; acc = argmax loglikelihood,
//                   acc_norm = argmax loglikelihood / len(sol) (the harness divides by the
//                   choice string's length in characters; here: Unicode code points).
//   wikitext:       document-level WikiText-2 (raw), detokenized as the harness does, scored by
//                   rolling non-overlapping windows of the model's context (prefix = BOS);
//                   word_perplexity = exp(-sum ll / words), byte_perplexity = exp(-sum ll / bytes),
//                   bits_per_byte = -sum ll / bytes / ln 2.
// Requests are tokenized as the harness's HF model does: without special tokens, the context's
// trailing spaces moved onto the continuation, continuation tokens = enc(context + continuation)
// less enc(context), an empty context replaced by the prefix token, inputs cut from the left to
// the model's context length.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmint8/model.h"
#include "llmint8/tokenizer.h"

namespace llmint8::eval {

// ---- Log-likelihood of requests ---------------------------------------------------------------

struct Loglikelihood {
  double logprob = 0;     // sum over the continuation tokens of log p(token | preceding), in double
  bool is_greedy = true;  // every continuation token is the argmax of its row (lowest index on ties)
};

// Scores `continuation` after `context` in a fresh pass of `session` (reset first): the input is
// (context + continuation)[-(max_len + 1):][:-1], max_len = the session model's context; an empty
// context is replaced by `prefix`. A continuation longer than max_len (undefined in the harness)
// is scored in passes of max_len tokens. Throws Error for an empty continuation or
// out-of-vocabulary ids.
Loglikelihood loglikelihood(Model& model, Session& session, std::span<const int32_t> context,
                            std::span<const int32_t> continuation, int32_t prefix);

// The harness's _encode_pair: trailing spaces of context move to the continuation; the
// continuation's tokens are those of enc(context + continuation) after enc(context)'s count.
struct EncodedPair {
  std::vector<int32_t> context, continuation;
};
EncodedPair encode_pair(const Tokenizer& tok, std::string_view context, std::string_view continuation);

// The harness's get_rolling_token_windows + make_disjoint_window: each window is (input tokens,
// count of predicted tokens at the end of it); windows' predictions partition `tokens`. The
// first window is [prefix] + tokens[:max_len-1]; later windows are the max_len tokens ending just
// before their last prediction, so the last (shorter) one keeps earlier tokens as context.
struct Window {
  std::vector<int32_t> input;  // fed to the model
  std::vector<int32_t> target; // predicted tokens: the model's outputs at the last target.size()
                               // positions of input predict them
};
std::vector<Window> rolling_windows(std::span<const int32_t> tokens, int32_t prefix, int64_t max_len);

// Sum of log p over every token of `tokens` scored by rolling windows.
double rolling_loglikelihood(Model& model, Session& session, std::span<const int32_t> tokens, int32_t prefix);

// ---- Metric helpers ---------------------------------------------------------------------------

double mean(std::span<const double> x);
// lm-eval's mean_stderr: sample standard deviation (n - 1) / sqrt(n); NaN for n < 2.
double mean_stderr(std::span<const double> x);
// Index of the largest value, the first on ties (numpy argmax).
size_t argmax(std::span<const double> x);
// Unicode code points of UTF-8 text (Python len(str)); invalid bytes count one each.
int64_t utf8_length(std::string_view s);
// Python len(re.split(r"\s+", s)): 1 + the number of maximal runs of whitespace.
int64_t split_word_count(std::string_view s);
// PIQA's acc_norm choice: argmax of ll[i] / utf8_length(choices[i]) (lm-eval divides by the
// choice string's len(), without the leading space).
size_t argmax_normalized(std::span<const double> ll, std::span<const std::string> choices);
// Corpus-level perplexities from the summed log-likelihood (natural log) of every document.
struct PerplexityMetrics {
  double word_perplexity = 0, byte_perplexity = 0, bits_per_byte = 0;
};
PerplexityMetrics perplexity_metrics(double loglikelihood, int64_t words, int64_t bytes);
// lm-eval's wikitext_detokenizer.
std::string wikitext_detokenize(std::string s);
// WikiText-2 raw split into documents at top-level headings (" = Title = " lines; "= = Sub = ="
// lines stay inside): an approximation of EleutherAI/wikitext_document_level, whose pages are the
// article's lines from its heading on. Text before the first heading is dropped when blank.
std::vector<std::string> wikitext_documents(std::string_view raw);

// ---- Tasks ------------------------------------------------------------------------------------

struct Metric {
  std::string task, name;
  double value = 0;
  std::optional<double> stderr_;  // none where the harness reports none
  bool higher_is_better = true;
  int64_t n = 0;                  // documents scored
};

struct EvalOptions {
  std::vector<std::string> tasks = {"lambada", "piqa", "wikitext"};  // also "lambada_openai"
  int64_t limit = 0;             // first N documents of each task; 0 = all
  std::string data_dir = "../shared/data";
  // (task, done, total) as documents complete.
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

// True for the task names evaluate() accepts: lambada (= lambada_openai), piqa, wikitext.
bool known_task(const std::string& name);
// Runs the tasks; throws Error naming a missing or malformed data file or an unknown task.
std::vector<Metric> evaluate(Model& model, const Tokenizer& tok, const EvalOptions& opts);

// One task + metric evaluated under two precisions.
struct ComparisonRow {
  std::string task, name;
  double a = 0, b = 0;
  std::optional<double> stderr_;  // the larger of the two runs' stderrs
  double diff = 0;                // b - a
  std::optional<bool> within;     // |diff| <= stderr; none without a stderr
  int64_t n = 0;                  // documents scored (the first run's)
};
std::vector<ComparisonRow> compare(const std::vector<Metric>& a, const std::vector<Metric>& b);

}  // namespace llmint8::eval

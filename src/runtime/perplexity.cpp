// Perplexity with the protocol of shared/reference/stories260K_reference.json: the token stream is
// cut into non-overlapping windows of ctx tokens (the last one shorter), every window is scored
// alone from an empty cache, and within a window position i predicts token i+1.
// NLL per position = logsumexp(logits) - logits[target], computed in double.
#include <cmath>
#include <string>

#include "llmint8/error.h"
#include "llmint8/runtime.h"

namespace llmint8 {

PerplexityResult perplexity(Model& model, std::span<const int32_t> tokens, int64_t ctx,
                            const std::function<void(int64_t, int64_t)>& progress) {
  if (ctx < 2) throw Error("perplexity: ctx must be at least 2 tokens, got " + std::to_string(ctx));
  if (ctx > model.max_context())
    throw Error("perplexity: ctx " + std::to_string(ctx) + " exceeds the model's context of " +
                std::to_string(model.max_context()) + " tokens");
  const int64_t n = int64_t(tokens.size());
  if (n < 2) throw Error("perplexity: the text has " + std::to_string(n) + " token(s); at least 2 are needed");
  const int64_t vocab = model.vocab_size();
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= vocab)
      throw Error("perplexity: token id " + std::to_string(tokens[size_t(i)]) + " at position " + std::to_string(i) +
                  " is outside the model's vocabulary of " + std::to_string(vocab));

  const int64_t windows = (n + ctx - 1) / ctx;
  auto session = model.new_session(ctx);
  std::vector<float> logits;
  PerplexityResult r;
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * ctx;
    const int64_t len = std::min(ctx, n - begin);
    if (len >= 2) {  // a window of one token predicts nothing
      session->reset();
      const auto win = tokens.subspan(size_t(begin), size_t(len));
      session->forward(win, &logits, /*all_logits=*/true);
      if (int64_t(logits.size()) != len * vocab)
        throw Error("perplexity: the model returned " + std::to_string(logits.size()) + " logits for a window of " +
                    std::to_string(len) + " tokens, expected " + std::to_string(len * vocab));
      for (int64_t i = 0; i + 1 < len; ++i) {
        const float* row = logits.data() + i * vocab;
        double mx = -INFINITY;
        for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, double(row[v]));
        double sum = 0;
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
        r.nll_sum += std::log(sum) + mx - double(row[win[size_t(i + 1)]]);
      }
      r.tokens_scored += len - 1;
    }
    if (progress) progress(w + 1, windows);
  }
  r.ppl = std::exp(r.nll_sum / double(r.tokens_scored));
  if (!std::isfinite(r.ppl))
    throw Error("perplexity: the result is not finite (NaN or infinite logits from the model)");
  return r;
}

}  // namespace llmint8

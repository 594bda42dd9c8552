// Autoregressive generation: one prefill forward over the prompt, then one forward per new token
// through the session's KV cache.
#include <algorithm>
#include <chrono>
#include <string>

#include "llmint8/error.h"
#include "llmint8/runtime.h"
#include "runtime/text_stream.h"

namespace llmint8 {
namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

GenerateResult generate(Model& model, const Tokenizer& tok, std::string_view prompt,
                        const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text) {
  if (opts.max_new_tokens < 0)
    throw Error("generate: max_new_tokens must be >= 0, got " + std::to_string(opts.max_new_tokens));
  Sampler sampler(opts.sampling);  // validates the sampling options before any work
  GenerateResult r;
  const int32_t bos = model.bos_id() >= 0 ? model.bos_id() : tok.bos_id();
  // Any EOS ends generation: the model's list (generation_config.json's, as transformers'
  // generate() uses; Llama-3 lists several) and the tokenizer's, which differ for some chat models.
  std::vector<int32_t> eos = model.eos_ids();
  if (tok.eos_id() >= 0) eos.push_back(tok.eos_id());
  auto is_eos = [&](int32_t id) { return std::find(eos.begin(), eos.end(), id) != eos.end(); };
  if (!prompt.empty()) r.prompt_ids = tok.encode(prompt, /*add_special_tokens=*/true);
  if (r.prompt_ids.empty()) {
    if (bos < 0)
      throw Error("generate: the prompt is empty and neither config.json nor the tokenizer names a BOS token");
    r.prompt_ids = {bos};
  }
  const int64_t vocab = model.vocab_size();
  for (int32_t id : r.prompt_ids)
    if (id < 0 || id >= vocab)
      throw Error("generate: prompt token id " + std::to_string(id) + " is outside the model's vocabulary of " +
                  std::to_string(vocab) + " (tokenizer and model do not match)");
  const int64_t n_prompt = int64_t(r.prompt_ids.size());
  const int64_t ctx = model.max_context();
  if (n_prompt >= ctx)
    throw Error("generate: the prompt has " + std::to_string(n_prompt) + " tokens; the model's context is " +
                std::to_string(ctx) + " tokens, leaving no room for new ones");
  const int64_t max_new = std::min<int64_t>(opts.max_new_tokens, ctx - n_prompt);
  if (max_new == 0) return r;

  auto session = model.new_session(n_prompt + max_new);
  TextStream stream(tok, r.prompt_ids);
  auto emit = [&](const std::string& piece) {
    if (!piece.empty() && on_text) on_text(piece);
  };
  std::vector<float> logits;

  auto t0 = Clock::now();
  session->forward(r.prompt_ids, &logits);
  int32_t next = sampler.sample(logits);
  r.prefill_seconds = seconds_since(t0);

  for (;;) {
    r.new_ids.push_back(next);
    if (opts.stop_at_eos && is_eos(next)) {
      r.stopped_at_eos = true;
      break;
    }
    emit(stream.push(next));
    if (int64_t(r.new_ids.size()) >= max_new) break;
    t0 = Clock::now();
    session->forward(std::span<const int32_t>(&next, 1), &logits);
    next = sampler.sample(logits);
    r.decode_seconds += seconds_since(t0);
    ++r.decode_steps;
  }
  emit(stream.finish());
  r.text = stream.emitted();
  return r;
}

}  // namespace llmint8

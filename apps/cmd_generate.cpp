// llmint8 generate: text continuation, streamed to stdout as it is produced.
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "llmint8/error.h"
#include "llmint8/runtime.h"

namespace llmint8::cli {
namespace {

struct GenerateArgs {
  CommonOptions common;
  std::string prompt;
  int max_new = 128;
  bool greedy = false;
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool no_echo = false;
  bool ignore_eos = false;
  bool stats = false;
  CLI::Option *temperature_opt = nullptr, *top_k_opt = nullptr, *top_p_opt = nullptr, *seed_opt = nullptr;
};

double per_second(double n, double s) { return s > 0 ? n / s : 0.0; }

int run_generate(GenerateArgs& a) {
  if (a.max_new < 0) throw Error("-n/--max-new-tokens " + std::to_string(a.max_new) + ": must be >= 0");
  const bool sampling = a.temperature_opt->count() || a.top_k_opt->count() || a.top_p_opt->count() || a.seed_opt->count();
  GenerateOptions go;
  go.max_new_tokens = a.max_new;
  go.stop_at_eos = !a.ignore_eos;
  go.sampling.greedy = a.greedy || !sampling;
  if (!go.sampling.greedy) {
    if (!std::isfinite(a.temperature) || a.temperature < 0)
      throw Error("--temperature " + std::to_string(double(a.temperature)) + ": must be >= 0 (0 = greedy)");
    if (a.top_k < 0) throw Error("--top-k " + std::to_string(a.top_k) + ": must be >= 0 (0 = off)");
    if (!(a.top_p > 0 && a.top_p <= 1)) throw Error("--top-p " + std::to_string(a.top_p) + ": must be in (0, 1] (1 = off)");
    go.sampling.temperature = a.temperature;
    go.sampling.top_k = a.top_k;
    go.sampling.top_p = a.top_p;
    go.sampling.seed = a.seed;
  }
  load_options(a.common);  // reject bad options before the (slow) load
  auto tok = load_tokenizer(a.common.model_dir);
  auto model = load_model(a.common);

  const bool stream = !a.common.json;
  // The prompt is echoed once generation has accepted it (valid UTF-8, fits the context), so a
  // rejected prompt prints nothing but the error.
  bool echoed = !stream || a.no_echo;
  auto echo = [&] {
    if (echoed) return;
    echoed = true;
    std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
    std::fflush(stdout);
  };
  auto on_text = [&](std::string_view piece) {
    if (!stream) return;
    echo();
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  GenerateResult r = generate(*model, *tok, a.prompt, go, on_text);
  echo();  // nothing was generated (EOS first): the prompt still shows
  const double prefill_tps = per_second(double(r.prompt_ids.size()), r.prefill_seconds);
  const double decode_tps = per_second(double(r.decode_steps), r.decode_seconds);

  if (a.common.json) {
    std::vector<int32_t> ids = r.prompt_ids;
    ids.insert(ids.end(), r.new_ids.begin(), r.new_ids.end());
    nlohmann::json j;
    j["prompt"] = a.prompt;
    j["text"] = r.text;
    j["ids"] = ids;  // prompt ids followed by the new ids, like transformers' generate()
    j["prompt_tokens"] = r.prompt_ids.size();
    j["new_tokens"] = r.new_ids.size();
    j["stopped_at_eos"] = r.stopped_at_eos;
    j["precision"] = model->info().precision;
    j["threshold"] = model->info().threshold;
    j["greedy"] = go.sampling.greedy;
    if (!go.sampling.greedy) {
      j["temperature"] = go.sampling.temperature;
      j["top_k"] = go.sampling.top_k;
      j["top_p"] = go.sampling.top_p;
      j["seed"] = go.sampling.seed;
    }
    j["prefill_seconds"] = r.prefill_seconds;
    j["decode_seconds"] = r.decode_seconds;
    j["prefill_tokens_per_s"] = prefill_tps;
    j["decode_tokens_per_s"] = decode_tps;
    print_json(j);
  } else {
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (a.stats)
      std::fprintf(stderr, "prompt %zu tokens, prefill %.1f tokens/s; %zu new tokens, decode %.1f tokens/s%s\n",
                   r.prompt_ids.size(), prefill_tps, r.new_ids.size(), decode_tps,
                   r.stopped_at_eos ? "; stopped at EOS" : "");
  }
  return 0;
}

}  // namespace

Command register_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand("generate", "Continue a prompt, streaming the text to stdout");
  add_common_options(sub, a->common, kDefaultModelDir);
  add_keep_columns_options(sub, a->common.keep);
  sub->add_option("-p,--prompt", a->prompt, "Prompt text; empty = start from BOS alone")->type_name("TEXT");
  sub->add_option("-n,--max-new-tokens", a->max_new, "New tokens at most (capped by the model's context)")
      ->type_name("N")
      ->capture_default_str();
  auto* greedy = sub->add_flag("--greedy", a->greedy, "Pick the most likely token every step (the default when no sampling option is given)");
  a->temperature_opt = sub->add_option("--temperature", a->temperature, "Sample with this temperature (default 1.0 when sampling; 0 = greedy)")->type_name("T");
  a->top_k_opt = sub->add_option("--top-k", a->top_k, "Sample among the K most likely tokens only (default 0 = off)")->type_name("K");
  a->top_p_opt = sub->add_option("--top-p", a->top_p, "Nucleus sampling: the smallest set of tokens whose probability reaches P (default 1 = off)")->type_name("P");
  a->seed_opt = sub->add_option("--seed", a->seed, "Random seed of sampling (default 0); the same seed gives the same text")->type_name("S");
  for (auto* o : {a->temperature_opt, a->top_k_opt, a->top_p_opt, a->seed_opt}) greedy->excludes(o);
  sub->add_flag("--no-echo", a->no_echo, "Print only the continuation, not the prompt before it");
  sub->add_flag("--ignore-eos", a->ignore_eos, "Keep generating past the end-of-sequence token");
  sub->add_flag("--stats", a->stats, "Print prompt/decode speed on stderr at the end");
  sub->footer(
      "Greedy decoding unless --temperature, --top-k, --top-p or --seed is given; sampling then applies\n"
      "temperature, top-k and top-p in that order, as Hugging Face generate() does.\n\n"
      "Examples:\n"
      "  llmint8 generate -p \"Once upon a time\" -n 64\n"
      "  llmint8 generate -m ../shared/models/stories260K -p \"Lily went\" --temperature 0.8 --top-p 0.9 --seed 7\n"
      "  llmint8 generate -p \"\" -n 40 --precision fp32 --json");
  return {sub, [a] { return run_generate(*a); }};
}

}  // namespace llmint8::cli

// llmint8 perplexity: perplexity of a text file with non-overlapping windows of --ctx tokens.
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "llmint8/error.h"
#include "llmint8/runtime.h"

namespace llmint8::cli {
namespace {

struct PerplexityArgs {
  CommonOptions common;
  std::string text_file;
  int64_t ctx = 0;
  int64_t limit = 0;
  CLI::Option *ctx_opt = nullptr, *limit_opt = nullptr;
};

int run_perplexity(PerplexityArgs& a) {
  if (a.ctx_opt->count() && a.ctx < 2) throw Error("--ctx " + std::to_string(a.ctx) + ": must be at least 2 tokens");
  if (a.limit_opt->count() && a.limit < 2)
    throw Error("--limit-tokens " + std::to_string(a.limit) + ": must be at least 2 tokens");
  load_options(a.common);  // reject bad options before reading anything
  const std::string text = read_file(a.text_file, "--text");
  if (text.empty()) throw Error("--text '" + a.text_file + "': the file is empty (nothing to score)");
  auto tok = load_tokenizer(a.common.model_dir);
  auto model = load_model(a.common);
  const int64_t ctx = a.ctx_opt->count() ? a.ctx : model->max_context();
  std::vector<int32_t> ids = tok->encode(text, /*add_special_tokens=*/true);
  if (a.limit_opt->count() && int64_t(ids.size()) > a.limit) ids.resize(size_t(a.limit));

  Progress bar("perplexity");
  const auto t0 = std::chrono::steady_clock::now();
  PerplexityResult r = perplexity(*model, ids, ctx, [&](int64_t done, int64_t total) {
    bar.update(uint64_t(done), uint64_t(total));
  });
  bar.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& info = model->info();
  if (a.common.json) {
    nlohmann::json j;
    j["ppl"] = r.ppl;
    j["tokens"] = ids.size();            // tokens of the (limited) text, BOS included
    j["tokens_scored"] = r.tokens_scored;  // positions predicted
    j["nll_sum"] = r.nll_sum;
    j["ctx"] = ctx;
    j["precision"] = info.precision;
    j["threshold"] = info.threshold;
    j["kept_columns"] = info.kept_columns;
    j["seconds"] = secs;
    print_json(j);
  } else {
    std::printf("perplexity %.6f over %lld scored tokens (%zu tokens, ctx %lld, %s, threshold %g%s) in %.1f s\n", r.ppl,
                (long long)r.tokens_scored, ids.size(), (long long)ctx, info.precision.c_str(), double(info.threshold),
                info.kept_columns ? (", " + std::to_string(info.kept_columns) + " kept columns").c_str() : "", secs);
  }
  return 0;
}

}  // namespace

Command register_perplexity(CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  CLI::App* sub = app.add_subcommand("perplexity", "Perplexity of a text file");
  add_common_options(sub, a->common);
  add_keep_columns_options(sub, a->common.keep);
  sub->add_option("--text", a->text_file, "Text file, read as bytes and tokenized with special tokens (BOS for Llama)")
      ->required()
      ->type_name("FILE");
  a->ctx_opt = sub->add_option("--ctx", a->ctx, "Window length in tokens (default: the model's context)")->type_name("N");
  a->limit_opt = sub->add_option("--limit-tokens", a->limit, "Score only the first N tokens of the text")->type_name("N");
  sub->footer(
      "Protocol: the tokens are cut into non-overlapping windows of --ctx tokens, each scored alone;\n"
      "ppl = exp(mean NLL of every position after the first of each window).\n\n"
      "Example:\n"
      "  llmint8 perplexity -m ../shared/models/stories260K --text story.txt --ctx 256 --json");
  return {sub, [a] { return run_perplexity(*a); }};
}

}  // namespace llmint8::cli

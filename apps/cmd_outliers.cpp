// llmint8 outliers: records the inputs of every quantizable Linear while the model reads a text
// and reports the outlier feature dimensions (src/runtime/outliers.h), optionally as an SVG chart.
#include <cstdio>
#include <fstream>
#include <memory>

#include "cli_common.h"
#include "llmint8/error.h"
#include "runtime/outliers.h"

namespace llmint8::cli {
namespace {

struct OutliersArgs {
  CommonOptions common;
  std::string text_file, plot_file;
  double outlier_threshold = 0;  // 0 = --threshold's value (6 when that is 0)
  int64_t max_tokens = 2048;
  int64_t top = 8;
};

int run_outliers(OutliersArgs& a) {
  if (a.outlier_threshold == 0) a.outlier_threshold = a.common.threshold > 0 ? a.common.threshold : 6.0;
  if (!(a.outlier_threshold > 0)) throw Error("--outlier-threshold must be > 0");
  if (a.max_tokens < 1) throw Error("--max-tokens " + std::to_string(a.max_tokens) + ": must be >= 1");
  if (a.top < 1) throw Error("--top " + std::to_string(a.top) + ": must be >= 1");
  LoadOptions opts = load_options(a.common);  // checks the options before reading anything
  const std::string text = read_file(a.text_file, "--text");
  auto tok = load_tokenizer(a.common.model_dir);
  outliers::Recorder rec(float(a.outlier_threshold));
  // load_model takes CommonOptions; the observer needs LoadOptions, so load here.
  check_model_dir(a.common.model_dir);
  opts.activation_observer = [&rec](const std::string& m, const float* X, int64_t M, int64_t K) {
    rec.observe(m, X, M, K);
  };
  auto model = Model::load(a.common.model_dir, opts);
  std::vector<int32_t> ids = tok->encode(text, /*add_special_tokens=*/true);
  if (int64_t(ids.size()) > a.max_tokens) ids.resize(size_t(a.max_tokens));
  if (ids.empty()) throw Error("--text " + a.text_file + ": no tokens");
  const int64_t ctx = model->max_context();
  auto session = model->new_session(ctx);
  std::vector<float> logits;
  // Non-overlapping windows of the model's context, each from an empty cache.
  for (size_t b = 0; b < ids.size(); b += size_t(ctx)) {
    const size_t len = std::min(size_t(ctx), ids.size() - b);
    session->reset();
    session->forward(std::span<const int32_t>(ids.data() + b, len), &logits, false);
    rec.end_step();
  }
  const outliers::Report r = rec.report(size_t(a.top));
  if (!a.plot_file.empty()) {
    std::ofstream f(a.plot_file, std::ios::binary);
    if (!f) throw Error("--plot " + a.plot_file + ": cannot create the file");
    f << outliers::to_svg(r, size_t(a.top));
    if (!f) throw Error("--plot " + a.plot_file + ": write failed");
  }
  if (a.common.json) {
    nlohmann::json j = outliers::to_json(r);
    j["precision"] = model->info().precision;
    j["model"] = a.common.model_dir;
    print_json(j);
    return 0;
  }
  std::printf("%lld tokens, threshold %g, precision %s\n", (long long)r.tokens, double(r.threshold),
              model->info().precision.c_str());
  for (const auto& g : r.groups) {
    std::printf("\ninput width %lld: %zu Linear inputs, %zu dimensions with |x| >= %g, %lld systematic\n",
                (long long)g.width, g.sites.size(), g.dims.size(), double(r.threshold), (long long)g.systematic);
    if (g.dims.empty()) continue;
    std::printf("  %6s %8s %8s %9s %10s  %s\n", "dim", "layers", "layer%", "token%", "max|x|", "systematic");
    for (size_t i = 0; i < g.dims.size() && i < size_t(a.top); ++i) {
      const auto& d = g.dims[i];
      std::printf("  %6lld %8lld %7.1f%% %8.1f%% %10.3f  %s\n", (long long)d.index, (long long)d.layers,
                  100 * d.layer_share, 100 * d.token_share, double(d.max_abs), d.systematic ? "yes" : "no");
    }
  }
  if (!a.plot_file.empty()) std::printf("\nplot written to %s\n", a.plot_file.c_str());
  return 0;
}

}  // namespace

Command register_outliers(CLI::App& app) {
  auto a = std::make_shared<OutliersArgs>();
  CLI::App* sub = app.add_subcommand("outliers", "Find outlier feature dimensions in the Linear inputs");
  add_common_options(sub, a->common, kDefaultModelDir);
  sub->add_option("--text", a->text_file, "Text file the model reads (tokenized with special tokens)")
      ->required()
      ->type_name("FILE");
  sub->add_option("--outlier-threshold", a->outlier_threshold,
                  "Magnitude that counts as an outlier (default: --threshold, or 6 when that is 0)");
  sub->add_option("--max-tokens", a->max_tokens, "Read at most N tokens of the text")->capture_default_str();
  sub->add_option("--top", a->top, "Dimensions listed and plotted")->capture_default_str();
  sub->add_option("--plot", a->plot_file, "Write an SVG chart of max |x| per layer for the top dimensions")
      ->type_name("FILE.svg");
  sub->footer(
      "Systematic outliers (LLM.int8() paper): |x| >= threshold in >= 25% of the Linear inputs of a width\n"
      "and >= 6% of the tokens. --threshold is the int8 decomposition threshold of the loaded model and,\n"
      "unless --outlier-threshold is given, also the magnitude analysed (default 6).\n\n"
      "Example:\n"
      "  llmint8 outliers -m ../shared/models/stories260K --text story.txt --plot outliers.svg");
  return {sub, [a] { return run_outliers(*a); }};
}

}  // namespace llmint8::cli

// llmint8 eval: zero-shot lambada_openai / piqa / wikitext with lm-evaluation-harness's
// definitions (include/llmint8/eval.h), for one precision or two side by side (--compare).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>

#include "cli_common.h"
#include "llmint8/error.h"
#include "llmint8/eval.h"

namespace llmint8::cli {
namespace {

struct EvalArgs {
  CommonOptions common;
  std::string tasks = "lambada,piqa,wikitext";
  int64_t limit = 0;
  std::string data_dir = "../shared/data";
  std::string compare;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

nlohmann::json opt_json(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string opt_str(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "N/A";
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", *v);
  return b;
}

// kept_columns: the model's fp16 weight columns kept beside its int8 weights (--keep-outlier-columns).
std::vector<eval::Metric> run_one(const CommonOptions& common, const eval::EvalOptions& eo, int64_t* kept_columns) {
  auto tok = load_tokenizer(common.model_dir);
  auto model = load_model(common);
  *kept_columns = model->info().kept_columns;
  Progress bar("eval " + common.precision);
  eval::EvalOptions o = eo;
  o.progress = [&](const std::string&, int64_t done, int64_t total) { bar.update(uint64_t(done), uint64_t(total)); };
  auto m = eval::evaluate(*model, *tok, o);
  bar.finish();
  return m;
}

int run_eval(EvalArgs& a) {
  if (a.limit < 0) throw Error("--limit " + std::to_string(a.limit) + ": must be >= 0");
  load_options(a.common);  // reject bad options before reading anything
  eval::EvalOptions eo;
  eo.tasks = split_commas(a.tasks);
  if (eo.tasks.empty()) throw Error("--tasks: no task given");
  for (const auto& t : eo.tasks)
    if (!eval::known_task(t)) throw Error("--tasks: unknown task '" + t + "' (known: lambada, piqa, wikitext)");
  eo.limit = a.limit;
  eo.data_dir = a.data_dir;
  const auto t0 = std::chrono::steady_clock::now();

  if (a.compare.empty()) {
    int64_t kept = 0;
    const auto metrics = run_one(a.common, eo, &kept);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (a.common.json) {
      nlohmann::json j;
      j["precision"] = a.common.precision;
      j["threshold"] = a.common.precision == "int8" ? a.common.threshold : 0.0;
      j["limit"] = a.limit;
      j["kept_columns"] = kept;
      j["seconds"] = secs;
      j["results"] = nlohmann::json::array();
      for (const auto& m : metrics)
        j["results"].push_back({{"task", m.task}, {"metric", m.name}, {"value", m.value},
                                {"stderr", opt_json(m.stderr_)}, {"n", m.n}, {"higher_is_better", m.higher_is_better}});
      print_json(j);
    } else {
      std::printf("%-16s %-16s %12s %10s %7s\n", "task", "metric", a.common.precision.c_str(), "stderr", "n");
      for (const auto& m : metrics)
        std::printf("%-16s %-16s %12.6g %10s %7lld\n", m.task.c_str(), m.name.c_str(), m.value,
                    opt_str(m.stderr_).c_str(), (long long)m.n);
      std::printf("(%s%s, %.1f s)\n", a.common.precision.c_str(),
                  kept ? (", " + std::to_string(kept) + " kept columns").c_str() : "", secs);
    }
    return 0;
  }

  const auto precs = split_commas(a.compare);
  if (precs.size() != 2) throw Error("--compare '" + a.compare + "': expected two precisions, e.g. int8,fp16");
  for (const auto& p : precs)
    if (!parse_precision(p, nullptr)) throw Error("--compare: unknown precision '" + p + "' (int8, fp16, bf16, fp32)");
  CommonOptions ca = a.common, cb = a.common;
  ca.precision = precs[0];
  cb.precision = precs[1];
  // One model at a time: the first is freed before the second loads.
  int64_t kept_a = 0, kept_b = 0;
  const auto ma = run_one(ca, eo, &kept_a);
  const auto mb = run_one(cb, eo, &kept_b);
  const auto rows = eval::compare(ma, mb);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.common.json) {
    nlohmann::json j;
    j["a"] = precs[0];
    j["b"] = precs[1];
    j["threshold"] = a.common.threshold;
    j["limit"] = a.limit;
    j["kept_columns"] = {{"a", kept_a}, {"b", kept_b}};
    j["seconds"] = secs;
    j["rows"] = nlohmann::json::array();
    for (const auto& r : rows) {
      j["rows"].push_back({{"task", r.task}, {"metric", r.name}, {"a", r.a}, {"b", r.b},
                           {"stderr", opt_json(r.stderr_)}, {"diff", r.diff},
                           {"within_stderr", r.within ? nlohmann::json(*r.within) : nlohmann::json(nullptr)},
                           {"n", r.n}});
    }
    print_json(j);
  } else {
    std::printf("%-16s %-16s %12s %12s %10s %11s  %s\n", "task", "metric", precs[0].c_str(), precs[1].c_str(),
                "stderr", "diff", "within stderr");
    for (const auto& r : rows)
      std::printf("%-16s %-16s %12.6g %12.6g %10s %+11.4g  %s\n", r.task.c_str(), r.name.c_str(), r.a, r.b,
                  opt_str(r.stderr_).c_str(), r.diff, !r.within ? "n/a" : *r.within ? "yes" : "no");
    std::printf("(%s vs %s, threshold %g, limit %lld, %.1f s)\n", precs[0].c_str(), precs[1].c_str(),
                a.common.threshold, (long long)a.limit, secs);
  }
  return 0;
}

}  // namespace

Command register_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand("eval", "Zero-shot LAMBADA / PIQA / WikiText-2 as lm-evaluation-harness scores them");
  add_common_options(sub, a->common, kDefaultModelDir);
  add_keep_columns_options(sub, a->common.keep);
  sub->add_option("--tasks", a->tasks, "Comma-separated tasks: lambada, piqa, wikitext")->capture_default_str();
  sub->add_option("--limit", a->limit, "Only the first N documents of each task (0 = all)")->type_name("N");
  sub->add_option("--data", a->data_dir, "Data directory (lambada/, piqa/, wikitext-2/)")->capture_default_str()->type_name("DIR");
  sub->add_option("--compare", a->compare, "Two precisions to evaluate one after the other, e.g. int8,fp16")
      ->type_name("A,B");
  sub->footer(
      "Metrics: lambada_openai perplexity and acc; piqa acc and acc_norm; wikitext word_perplexity,\n"
      "byte_perplexity, bits_per_byte. Stderr of acc: sample std / sqrt(n) (lm-eval's mean_stderr);\n"
      "lambada perplexity: delta method (the harness bootstraps); wikitext: none, as in the harness.\n"
      "WikiText documents are approximated by splitting wiki.test.raw at ' = Title = ' headings.\n\n"
      "Examples:\n"
      "  llmint8 eval -m ../shared/models/stories260K --tasks lambada,piqa --limit 200\n"
      "  llmint8 eval -m ../shared/models/stories260K --compare int8,fp32 --limit 100 --json");
  return {sub, [a] { return run_eval(*a); }};
}

}  // namespace llmint8::cli

// llmint8 quantize: write an 8-bit checkpoint in the transformers/bitsandbytes layout, once, so
// that later loads need neither the 16-bit file nor the conversion (src/model/quantize.h).
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli_common.h"
#include "llmint8/error.h"
#include "model/quantize.h"

namespace llmint8::cli {
namespace {

struct QuantizeArgs {
  std::string in, out;
  double threshold = 6.0;
  std::vector<std::string> skip;
  std::string shard_size = "5GB";
  int threads = 0;
  bool json = false;
  KeepColumnsOptions keep;
};

// "5GB", "500MB", "2GiB", "123456" -> bytes (transformers' max_shard_size spelling).
uint64_t parse_size(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  double v = 0;
  try {
    v = i ? std::stod(s.substr(0, i)) : -1;
  } catch (const std::exception&) {
    v = -1;
  }
  const std::string unit = s.substr(i);
  double mul = 0;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "KB") mul = 1e3;
  else if (unit == "MB") mul = 1e6;
  else if (unit == "GB") mul = 1e9;
  else if (unit == "KiB") mul = 1024.0;
  else if (unit == "MiB") mul = 1024.0 * 1024;
  else if (unit == "GiB") mul = 1024.0 * 1024 * 1024;
  if (!(v > 0) || mul == 0 || !std::isfinite(v * mul) || v * mul > 1e15)
    throw Error("--shard-size '" + s + "': expected a size such as 5GB, 500MB or 2GiB");
  return uint64_t(v * mul);
}

int run_quantize(QuantizeArgs& a) {
  if (!std::isfinite(a.threshold) || a.threshold < 0)
    throw Error("--threshold must be a finite number >= 0 (0 = no decomposition)");
  if (a.threads < 0) throw Error("--threads must be >= 0 (0 = all cores)");
  check_model_dir(a.in);
  model::QuantizeOptions o;
  o.threshold = float(a.threshold);
  o.skip_modules = a.skip;
  o.max_shard_bytes = parse_size(a.shard_size);
  o.threads = a.threads;
  if (a.keep.enabled) {
    // The calibration pass runs the input model in int8 with the threshold recorded here.
    LoadOptions lo;
    lo.threshold = o.threshold;
    lo.threshold_from_checkpoint = false;
    lo.skip_modules = a.skip;
    lo.threads = a.threads;
    o.kept_columns = calibrate(a.in, lo, a.keep);
  }
  Progress bar("quantizing " + std::filesystem::path(a.in).filename().string());
  if (bar.enabled()) o.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  const model::QuantizeResult r = model::quantize_checkpoint(a.in, a.out, o);
  bar.finish();
  const model::QuantizePlan& p = r.plan;
  const double ratio = p.input_bytes ? double(p.output_bytes) / double(p.input_bytes) : 0.0;
  if (a.json) {
    nlohmann::json j;
    j["input"] = a.in;
    j["output"] = a.out;
    j["threshold"] = a.threshold;
    j["quantized_modules_count"] = p.quantized.size();
    j["kept_modules"] = p.kept;
    j["kept_columns"] = p.kept_columns;
    j["input_bytes"] = p.input_bytes;
    j["output_bytes"] = p.output_bytes;
    j["ratio"] = ratio;
    j["shards"] = r.shards;
    print_json(j);
  } else {
    std::printf("wrote %s: %zu Linear modules in int8 (%zu kept in 16-bit), %zu shard%s\n", a.out.c_str(),
                p.quantized.size(), p.kept.size(), r.shards.size(), r.shards.size() == 1 ? "" : "s");
    if (a.keep.enabled)
      std::printf("kept %lld fp16 weight columns of outlier dimensions beside the int8 weights\n",
                  (long long)p.kept_columns);
    std::printf("tensor bytes: %.2f MiB -> %.2f MiB (%.3fx)\n", double(p.input_bytes) / 1048576.0,
                double(p.output_bytes) / 1048576.0, ratio);
  }
  return 0;
}

}  // namespace

Command register_quantize(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* sub = app.add_subcommand(
      "quantize", "Convert a 16/32-bit model into an 8-bit checkpoint (transformers/bitsandbytes layout)");
  sub->add_option("-m,--model", a->in, "Input Hugging Face model directory (16/32-bit)")->required()->type_name("DIR");
  sub->add_option("-o,--output", a->out, "Output directory (must not exist, or be empty)")->required()->type_name("DIR");
  sub->add_option("--threshold", a->threshold, "Outlier threshold recorded in quantization_config")
      ->type_name("T")
      ->capture_default_str();
  sub->add_option("--skip", a->skip, "Keep this Linear module in 16-bit (repeatable), e.g. --skip mlp.down_proj")
      ->type_name("MODULE")
      ->allow_extra_args(false);
  sub->add_option("--shard-size", a->shard_size, "Largest model.safetensors shard")->type_name("SIZE")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads; 0 = all cores")->type_name("N")->capture_default_str();
  sub->add_flag("--json", a->json, "Print exactly one JSON object on stdout instead of text");
  add_keep_columns_options(sub, a->keep);
  sub->footer(
      "Streams one tensor at a time (memory ~ the largest tensor) and writes under a temporary name,\n"
      "renamed at the end: an interrupted run leaves no directory at the output path.\n"
      "--keep-outlier-columns saves <p>.kept_columns (I32) and <p>.kept_weight (F16 [out, n]) beside\n"
      "the int8 weights; transformers + bitsandbytes ignore them (reported as unused weights).\n"
      "Example:\n"
      "  llmint8 quantize -m ../shared/models/stories260K -o stories260K-int8\n"
      "  llmint8 generate -m stories260K-int8 -p \"Once upon a time\"");
  return {sub, [a] { return run_quantize(*a); }};
}

}  // namespace llmint8::cli

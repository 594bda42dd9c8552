#include "cli_common.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "llmint8/error.h"
#include "llmint8/runtime.h"
#include "model/config.h"

namespace llmint8::cli {

void add_common_options(CLI::App* sub, CommonOptions& o, const std::string& model_default) {
  auto* m = sub->add_option("-m,--model", o.model_dir, "Hugging Face model directory (config.json, *.safetensors, tokenizer)");
  if (model_default.empty()) {
    m->required();
  } else {
    o.model_dir = model_default;
    m->capture_default_str();
  }
  m->type_name("DIR");
  sub->add_option("--precision", o.precision, "How Linear weights are held: int8 (LLM.int8()), fp16, bf16, fp32")
      ->type_name("P")
      ->capture_default_str();
  o.threshold_option =
      sub->add_option("--threshold", o.threshold,
                      "Outlier threshold of the int8 decomposition; 0 = no decomposition (an 8-bit "
                      "checkpoint's own threshold is used unless given)")
          ->type_name("T")
          ->capture_default_str();
  sub->add_option("--threads", o.threads, "CPU threads; 0 = all cores")->type_name("N")->capture_default_str();
  sub->add_option("--skip", o.skip, "Keep this Linear module in 16-bit under int8 (repeatable), e.g. --skip mlp.down_proj")
      ->type_name("MODULE")
      ->allow_extra_args(false);
  sub->add_option("--device", o.device, "cpu (cuda when built with CUDA)")->type_name("DEV")->capture_default_str();
  sub->add_flag("--gpu-embeddings", o.gpu_embeddings,
                "cuda: keep the input embedding table in GPU memory too (by default it stays in pinned host "
                "memory unless lm_head shares it; only the tokens' rows are read)");
  sub->add_flag("--json", o.json, "Print exactly one JSON object on stdout instead of text");
}

void add_keep_columns_options(CLI::App* sub, KeepColumnsOptions& k) {
  sub->add_flag("--keep-outlier-columns", k.enabled,
                "Beyond bitsandbytes (int8, cpu): keep the fp16 weight columns of the outlier dimensions a "
                "calibration pass finds, so the 16-bit part of the product uses exact weights instead of "
                "dequantized int8 ones");
  sub->add_option("--calibration-text", k.text,
                  std::string("Text file of the calibration pass (default: ") + kDefaultCalibrationText + ")")
      ->type_name("FILE");
  sub->add_option("--calibration-tokens", k.tokens, "Calibrate on the first N tokens of that text")
      ->type_name("N")
      ->capture_default_str();
  sub->add_option("--max-kept-columns", k.max_columns,
                  "Most kept columns per Linear, the most frequent outliers first; 0 = max(8, 1% of its inputs)")
      ->type_name("N")
      ->capture_default_str();
}

std::map<std::string, std::vector<int32_t>> calibrate(const std::string& dir, const LoadOptions& lo,
                                                      const KeepColumnsOptions& k) {
  if (k.tokens <= 0) throw Error("--calibration-tokens " + std::to_string(k.tokens) + ": must be > 0");
  if (k.max_columns < 0) throw Error("--max-kept-columns " + std::to_string(k.max_columns) + ": must be >= 0");
  const std::string path = k.text.empty() ? kDefaultCalibrationText : k.text;
  std::string text = read_file(path, "--calibration-text");
  // Only a prefix is needed: ~4 bytes per token in English; 64 bytes per token leaves room.
  const size_t want = size_t(std::min<int64_t>(k.tokens, int64_t(1) << 40)) * 64;
  if (text.size() > want) {
    const size_t nl = text.rfind('\n', want);
    text.resize(nl != std::string::npos && nl > 0 ? nl + 1 : want);
  }
  auto tok = load_tokenizer(dir);
  std::vector<int32_t> ids = tok->encode(text, true);
  if (int64_t(ids.size()) > k.tokens) ids.resize(size_t(k.tokens));
  Progress bar("calibrating " + std::filesystem::path(dir).filename().string());
  CalibrationOptions co;
  co.max_kept_columns = k.max_columns;
  if (bar.enabled()) co.progress = [&bar](int64_t done, int64_t total) { bar.update(uint64_t(done), uint64_t(total)); };
  LoadOptions clo = lo;
  clo.progress = nullptr;
  auto cols = calibrate_kept_columns(dir, clo, ids, co);
  bar.finish();
  return cols;
}

namespace {
std::string fmt_g(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}
}  // namespace

void check_model_dir(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) throw Error("model directory '" + dir + "': does not exist");
  if (!std::filesystem::is_directory(dir, ec)) throw Error("model directory '" + dir + "': is not a directory");
}

LoadOptions load_options(const CommonOptions& o) {
  LoadOptions lo;
  if (!parse_precision(o.precision, &lo.precision))
    throw Error("--precision '" + o.precision + "': unknown precision (use int8, fp16, bf16 or fp32)");
  if (!std::isfinite(o.threshold) || o.threshold < 0)
    throw Error("--threshold " + fmt_g(o.threshold) + ": must be a finite number >= 0 (0 = no decomposition)");
  lo.threshold = float(o.threshold);
  lo.threshold_from_checkpoint = !(o.threshold_option && o.threshold_option->count() > 0);
  if (o.threads < 0) throw Error("--threads " + std::to_string(o.threads) + ": must be >= 0 (0 = all cores)");
  lo.threads = o.threads;
  lo.skip_modules = o.skip;
  for (const auto& m : o.skip)
    if (m.empty()) throw Error("--skip: empty module name");
  if (o.device == "cpu") {
    lo.device = "cpu";
  } else if (o.device == "cuda" || o.device.rfind("cuda:", 0) == 0) {
#ifdef LLMINT8_HAVE_CUDA
    lo.device = o.device;
#else
    throw Error("--device " + o.device + ": this build has no CUDA backend (rebuild with -DLLMINT8_CUDA=ON)");
#endif
  } else {
    throw Error("--device '" + o.device + "': unknown device (use cpu or cuda)");
  }
  lo.gpu_embeddings = o.gpu_embeddings;
  if (o.keep.enabled && lo.device != "cpu")
    throw Error("--keep-outlier-columns is not supported on cuda yet; use --device cpu");
  check_model_dir(o.model_dir);
  return lo;
}

std::unique_ptr<Model> load_model(const CommonOptions& o) {
  LoadOptions lo = load_options(o);
  const bool keep = o.keep.enabled && lo.precision == Precision::Int8;
  const bool prequantized = keep && model::load_config(o.model_dir).int8_threshold >= 0.f;
  if (keep && !prequantized) lo.kept_columns = calibrate(o.model_dir, lo, o.keep);
  Progress bar("loading " + std::filesystem::path(o.model_dir).filename().string());
  if (bar.enabled()) lo.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  auto model = Model::load(o.model_dir, lo);
  bar.finish();
  if (prequantized && model->info().kept_columns == 0)
    throw Error("--keep-outlier-columns: " + o.model_dir + " is an 8-bit checkpoint saved without kept columns "
                "(quantize the 16-bit model with --keep-outlier-columns)");
  return model;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  check_model_dir(dir);
  return Tokenizer::load(dir);
}

std::string read_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(std::string(what) + " '" + path + "': is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(std::string(what) + " '" + path + "': cannot open (" + std::strerror(errno) + ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(std::string(what) + " '" + path + "': read failed");
  return ss.str();
}

Progress::Progress(std::string label) : label_(std::move(label)), enabled_(isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() {
  if (drawn_) std::fputs("\n", stderr);
}

void Progress::update(uint64_t done, uint64_t total) {
  if (!enabled_ || total == 0) return;
  const int permille = int(std::min<uint64_t>(1000, done * 1000 / total));
  if (permille == last_permille_) return;  // redraw only on visible change
  last_permille_ = permille;
  constexpr int kWidth = 30;
  const int filled = permille * kWidth / 1000;
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %5.1f%%", label_.c_str(), bar.c_str(), permille / 10.0);
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (drawn_) {
    // Clear the line so that later output starts clean.
    std::fprintf(stderr, "\r%*s\r", int(label_.size() + 45), "");
    std::fflush(stderr);
    drawn_ = false;
  }
}

void print_json(const nlohmann::json& j) {
  const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace llmint8::cli

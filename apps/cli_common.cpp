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
  sub->add_flag("--json", o.json, "Print exactly one JSON object on stdout instead of text");
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
  check_model_dir(o.model_dir);
  return lo;
}

std::unique_ptr<Model> load_model(const CommonOptions& o) {
  LoadOptions lo = load_options(o);
  Progress bar("loading " + std::filesystem::path(o.model_dir).filename().string());
  if (bar.enabled()) lo.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  auto model = Model::load(o.model_dir, lo);
  bar.finish();
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

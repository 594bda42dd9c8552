// Pieces every llmint8 subcommand shares: the common options, loading, progress and JSON output.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "llmint8/model.h"
#include "llmint8/tokenizer.h"

namespace llmint8::cli {

// --keep-outlier-columns and its calibration (LoadOptions::kept_columns, calibrate_kept_columns).
struct KeepColumnsOptions {
  bool enabled = false;
  std::string text;          // calibration text file; empty = kDefaultCalibrationText
  int64_t tokens = 4096;     // its first N tokens
  int64_t max_columns = 0;   // per Linear; 0 = max(8, 1% of in_features)
};

// Options every subcommand takes.
struct CommonOptions {
  std::string model_dir;
  std::string precision = "int8";
  double threshold = 6.0;
  int threads = 0;
  bool json = false;
  std::vector<std::string> skip;
  std::string device = "cpu";
  bool gpu_embeddings = false;
  // Set by add_common_options: whether --threshold was given (it then overrides an 8-bit
  // checkpoint's quantization_config).
  CLI::Option* threshold_option = nullptr;
  // add_keep_columns_options (--keep-outlier-columns): load_model runs a calibration pass first.
  KeepColumnsOptions keep;
};

// The default model of `generate`, relative to the current directory (the repository root in the
// README's quick start).
inline constexpr const char* kDefaultModelDir = "../shared/models/stories260K";
// The default calibration text of --keep-outlier-columns: WikiText-2's test split (raw), in the
// data directory `eval` reads by default; not LAMBADA, so that LAMBADA scores stay uncalibrated.
inline constexpr const char* kDefaultCalibrationText = "../shared/data/wikitext-2/wiki.test.raw";

// Adds -m/--model, --precision, --threshold, --threads, --json, --skip, --device to `sub`.
// model_default: empty = -m is required.
void add_common_options(CLI::App* sub, CommonOptions& o, const std::string& model_default = {});

// Adds --keep-outlier-columns, --calibration-text, --calibration-tokens, --max-kept-columns.
void add_keep_columns_options(CLI::App* sub, KeepColumnsOptions& k);

// The calibration pass of --keep-outlier-columns on the 16/32-bit model in `dir` loaded with `lo`
// (first k.tokens tokens of k.text), with a progress bar: the kept columns per Linear.
std::map<std::string, std::vector<int32_t>> calibrate(const std::string& dir, const LoadOptions& lo,
                                                      const KeepColumnsOptions& k);

// Throws Error unless dir is an existing directory.
void check_model_dir(const std::string& dir);

// Checks the values CLI11 cannot (precision, device, ...) and converts them; throws Error.
LoadOptions load_options(const CommonOptions& o);

// Loads the model with a progress bar on stderr when it is a terminal. With --keep-outlier-columns
// (int8): a 16/32-bit model is calibrated first (calibrate); an 8-bit checkpoint must have been
// saved with kept columns.
std::unique_ptr<Model> load_model(const CommonOptions& o);
// Loads the tokenizer of a model directory (only the tokenizer files are needed).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

// Reads a whole file as bytes; throws Error naming it.
std::string read_file(const std::string& path, const char* what);

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(std::string label);
  ~Progress();
  void update(uint64_t done, uint64_t total);
  void finish();
  bool enabled() const { return enabled_; }

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  int last_permille_ = -1;
};

// Prints exactly one JSON object and a newline on stdout (invalid UTF-8 replaced by U+FFFD).
void print_json(const nlohmann::json& j);

// A subcommand: its CLI11 app and what to run once it was parsed (returns the exit code).
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command register_generate(CLI::App& app);
Command register_perplexity(CLI::App& app);
Command register_tokenize(CLI::App& app);
Command register_info(CLI::App& app);
Command register_quantize(CLI::App& app);
Command register_eval(CLI::App& app);
Command register_outliers(CLI::App& app);

}  // namespace llmint8::cli

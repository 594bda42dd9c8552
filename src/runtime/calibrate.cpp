// calibrate_kept_columns (include/llmint8/runtime.h): the calibration pass of
// --keep-outlier-columns.
#include <algorithm>
#include <cmath>
#include <set>

#include "llmint8/error.h"
#include "llmint8/runtime.h"
#include "model/config.h"

namespace llmint8 {
namespace {

// Per Linear: in how many tokens each input column reached the threshold, and its largest |x|.
struct ColumnStats {
  std::vector<int64_t> tokens;
  std::vector<float> max_abs;
};

}  // namespace

std::map<std::string, std::vector<int32_t>> calibrate_kept_columns(const std::string& dir, LoadOptions opts,
                                                                   std::span<const int32_t> tokens,
                                                                   const CalibrationOptions& c) {
  if (tokens.empty()) throw Error("calibration: no tokens to run (the calibration text is empty)");
  if (c.max_kept_columns < 0) throw Error("calibration: the most kept columns per Linear must be >= 0");
  if (model::load_config(dir).int8_threshold >= 0.f)
    throw Error(dir + ": an 8-bit checkpoint: kept columns come from the 16-bit weights (quantize the "
                "original model with --keep-outlier-columns)");
  std::map<std::string, ColumnStats> stats;
  float threshold = 0.f;
  opts.precision = Precision::Int8;
  opts.kept_columns.clear();
  opts.activation_observer = [&](const std::string& module, const float* X, int64_t M, int64_t K) {
    ColumnStats& s = stats[module];
    if (s.tokens.empty()) {
      s.tokens.assign(size_t(K), 0);
      s.max_abs.assign(size_t(K), 0.f);
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        const float a = std::fabs(X[m * K + k]);
        if (a >= threshold) {  // NaN never counts, as in the decomposition
          ++s.tokens[size_t(k)];
          s.max_abs[size_t(k)] = std::max(s.max_abs[size_t(k)], a);
        }
      }
  };
  auto model = Model::load(dir, opts);
  threshold = model->info().threshold;
  if (!(threshold > 0.f))
    throw Error("--keep-outlier-columns needs an outlier threshold > 0 (with 0 no column is ever an outlier)");
  const int64_t ctx = model->max_context(), n = int64_t(tokens.size());
  const int64_t windows = (n + ctx - 1) / ctx;
  auto session = model->new_session(std::min(ctx, n));
  for (int64_t w = 0; w < windows; ++w) {
    session->reset();
    session->forward(tokens.subspan(size_t(w * ctx), size_t(std::min(ctx, n - w * ctx))), nullptr);
    if (c.progress) c.progress(w + 1, windows);
  }

  const std::set<std::string> quantized(model->info().quantized_modules.begin(),
                                        model->info().quantized_modules.end());
  std::map<std::string, std::vector<int32_t>> out;
  for (const auto& entry : stats) {
    // (no structured binding: clang 14, which the fuzz build uses, cannot capture one in a lambda)
    const std::string& module = entry.first;
    const auto& s = entry.second;
    if (!quantized.count(module)) continue;  // on the skip list: held in 16-bit
    const int64_t K = int64_t(s.tokens.size());
    std::vector<int32_t> cols;
    for (int64_t k = 0; k < K; ++k)
      if (s.tokens[size_t(k)] > 0) cols.push_back(int32_t(k));
    if (cols.empty()) continue;
    const int64_t cap = c.max_kept_columns > 0 ? c.max_kept_columns : std::max<int64_t>(8, (K + 99) / 100);
    if (int64_t(cols.size()) > cap) {
      std::stable_sort(cols.begin(), cols.end(), [&](int32_t a, int32_t b) {
        if (s.tokens[size_t(a)] != s.tokens[size_t(b)]) return s.tokens[size_t(a)] > s.tokens[size_t(b)];
        return s.max_abs[size_t(a)] > s.max_abs[size_t(b)];
      });
      cols.resize(size_t(cap));
      std::sort(cols.begin(), cols.end());
    }
    out[module] = std::move(cols);
  }
  return out;
}

}  // namespace llmint8

// Outlier-feature analysis (LLM.int8() paper, section 4): which hidden dimensions of the inputs of
// the quantized Linear layers reach |x| >= threshold, in how many layers and for what share of
// tokens. A Recorder is installed as LoadOptions::activation_observer; it sees every Linear input.
//
// Definitions used here:
//  * site: one Linear input tensor. Linears reading the same tensor in the same step (q/k/v after
//    the input norm, gate/up after the post-attention norm) are one site, named by the first of
//    them ("...q_proj+k_proj+v_proj"). Sites are grouped by input width; the "hidden" group is the
//    width with the most sites (q/k/v, o, gate/up for Llama; down_proj's input is its own group).
//  * for dimension d of a group: layers = sites where some token has |x_d| >= threshold;
//    token share = tokens (positions) at which |x_d| >= threshold in at least one site of the group
//    / tokens seen; max = max |x_d| over all sites and tokens.
//  * systematic (the paper's criterion): layers >= 25% of the group's sites and token share >= 6%.
// Dimensions are ranked systematic first, then by layer share x token share, then by max.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmint8::outliers {

struct Dimension {
  int64_t index = 0;
  int64_t layers = 0;           // sites with an outlier in this dimension
  double layer_share = 0;       // layers / sites of the group
  double token_share = 0;
  int64_t outlier_values = 0;   // (site, token) pairs with |x| >= threshold
  float max_abs = 0;
  bool systematic = false;
  std::vector<float> max_per_site;  // max |x_d| of every site of the group, in site order
};

struct Group {
  int64_t width = 0;
  std::vector<std::string> sites;   // site names, in model order
  std::vector<float> site_max_other;  // per site: max |x| over dimensions not listed in `top`
  std::vector<Dimension> dims;      // every dimension with at least one outlier, ranked
  int64_t systematic = 0;
};

struct Report {
  float threshold = 0;
  int64_t tokens = 0;
  std::vector<Group> groups;  // the hidden group first
};

class Recorder {
 public:
  explicit Recorder(float threshold);
  // The observer: X [M, K] row-major, the input of Linear `module`.
  void observe(const std::string& module, const float* X, int64_t M, int64_t K);
  // Ends the current forward step: the next call starts a new site sequence (call after each
  // Session::forward).
  void end_step();
  // top: how many of the ranked dimensions site_max_other leaves out (the plot's lines).
  Report report(size_t top = 8) const;

 private:
  struct Site {
    std::string name;
    int64_t width = 0;
    int64_t rows = 0;                      // tokens seen
    std::vector<int64_t> count;            // [width] values >= threshold
    std::vector<float> max_abs;            // [width]
    std::vector<std::vector<uint8_t>> hit; // [width][token] |x| >= threshold at that token
  };
  float threshold_;
  std::vector<Site> sites_;
  size_t next_ = 0;            // index of the next site in the current step
  const float* last_x_ = nullptr;
  int64_t last_m_ = -1;
  int64_t step_rows_ = 0;      // rows of the current step
  int64_t tokens_ = 0;         // tokens before the current step
};

nlohmann::json to_json(const Report& r, size_t max_dims = 50);
// A line chart (hand-written SVG): max |x| per site (log scale) for the top `top` dimensions of
// the hidden group, the largest other dimension in grey and the threshold dashed.
std::string to_svg(const Report& r, size_t top = 8);

}  // namespace llmint8::outliers

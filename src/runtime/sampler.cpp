// Next-token selection: greedy argmax or temperature / top-k / top-p sampling with a seeded,
// platform-independent PRNG (xoshiro256** seeded through splitmix64), so a seed names one output.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "llmint8/error.h"
#include "llmint8/runtime.h"

namespace llmint8 {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

bool is_greedy(const SamplingOptions& o) { return o.greedy || o.temperature <= 0.f; }

// Argmax over the finite-or-infinite, non-NaN logits; the lowest index wins ties.
int32_t argmax(std::span<const float> logits) {
  int64_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[size_t(best)]) best = int64_t(i);
  }
  if (best < 0) throw Error("sampler: every logit is NaN");
  return int32_t(best);
}

}  // namespace

Sampler::Sampler(const SamplingOptions& opts) : opts_(opts) {
  if (std::isnan(opts.temperature)) throw Error("sampler: temperature is NaN");
  if (opts.top_k < 0) throw Error("sampler: top_k must be >= 0, got " + std::to_string(opts.top_k));
  if (!(opts.top_p > 0.f && opts.top_p <= 1.f))
    throw Error("sampler: top_p must be in (0, 1], got " + std::to_string(opts.top_p));
  // xoshiro256** must not start from the all-zero state; splitmix64 never yields four zeros.
  uint64_t x = opts.seed;
  for (auto& w : s_) w = splitmix64(x);
}

uint64_t Sampler::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::vector<double> Sampler::distribution(std::span<const float> logits) const {
  if (logits.empty()) throw Error("sampler: empty logits");
  std::vector<double> p(logits.size(), 0.0);
  if (is_greedy(opts_)) {
    p[size_t(argmax(logits))] = 1.0;
    return p;
  }
  // Candidates in descending logit order, ties by ascending index (a stable, total order).
  // NaN logits never become candidates; -inf ones get probability 0 below.
  std::vector<int32_t> order;
  order.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isnan(logits[i])) order.push_back(int32_t(i));
  if (order.empty()) throw Error("sampler: every logit is NaN");
  auto before = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  size_t keep = order.size();
  if (opts_.top_k > 0 && size_t(opts_.top_k) < keep) {
    keep = size_t(opts_.top_k);
    std::partial_sort(order.begin(), order.begin() + ptrdiff_t(keep), order.end(), before);
    order.resize(keep);
  } else {
    std::sort(order.begin(), order.end(), before);
  }
  const double top = logits[size_t(order[0])];
  if (std::isinf(top) && top < 0) throw Error("sampler: every logit is -inf");
  if (std::isinf(top)) {  // +inf dominates: the first (lowest-index) +inf takes all the mass
    p[size_t(order[0])] = 1.0;
    return p;
  }
  // Softmax of logits / T in double, shifted by the maximum for range.
  const double inv_t = 1.0 / double(opts_.temperature);
  std::vector<double> w(order.size());
  double sum = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    w[j] = std::exp((double(logits[size_t(order[j])]) - top) * inv_t);
    sum += w[j];
  }
  size_t n = order.size();
  if (opts_.top_p < 1.f) {
    // Nucleus: the shortest descending prefix whose mass reaches p (at least one token).
    const double target = double(opts_.top_p) * sum;
    double cum = 0;
    for (n = 0; n < order.size();) {
      cum += w[n++];
      if (cum >= target) break;
    }
    sum = cum;
  }
  for (size_t j = 0; j < n; ++j) p[size_t(order[j])] = w[j] / sum;
  return p;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (is_greedy(opts_)) {
    if (logits.empty()) throw Error("sampler: empty logits");
    return argmax(logits);
  }
  const std::vector<double> p = distribution(logits);
  // u in [0, 1) with 53 random bits; walk the cumulative mass in index order.
  const double u = double(next_u64() >> 11) * 0x1.0p-53;
  double cum = 0;
  int32_t last = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    cum += p[i];
    last = int32_t(i);
    if (u < cum) return last;
  }
  return last;  // rounding left u >= the summed mass: the last token with mass
}

}  // namespace llmint8

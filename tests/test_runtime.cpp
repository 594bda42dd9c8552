// Runtime: Sampler, generate() and perplexity() against fake models/tokenizers whose answers are
// known exactly, plus the stories260K reference figures when ../shared is present.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "llmint8/error.h"
#include "llmint8/runtime.h"
#include "runtime/text_stream.h"

using namespace llmint8;

// ---------------------------------------------------------------------------------- Sampler ----

TEST(Sampler, GreedyTiesPickLowestIndex) {
  SamplingOptions o;
  o.greedy = true;
  Sampler s(o);
  const std::vector<float> l = {1.f, 3.f, 2.f, 3.f, 3.f};
  EXPECT_EQ(s.sample(l), 1);
  const std::vector<float> all_equal(7, 0.5f);
  EXPECT_EQ(s.sample(all_equal), 0);
  const std::vector<float> with_nan = {NAN, -1.f, 4.f, 4.f};
  EXPECT_EQ(s.sample(with_nan), 2);
}

TEST(Sampler, TemperatureZeroIsGreedy) {
  SamplingOptions o;
  o.temperature = 0.f;
  o.seed = 3;
  Sampler s(o);
  const std::vector<float> l = {0.f, 2.f, 2.f, -1.f};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(l), 1);
}

TEST(Sampler, TopKOneEqualsGreedy) {
  std::mt19937 gen(42);
  std::normal_distribution<float> nd(0.f, 3.f);
  SamplingOptions g;
  g.greedy = true;
  Sampler greedy(g);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::vector<float> l(97);
    for (auto& x : l) x = std::round(nd(gen));  // rounding makes ties frequent
    SamplingOptions o;
    o.top_k = 1;
    o.temperature = 1.7f;
    o.seed = seed;
    Sampler s(o);
    EXPECT_EQ(s.sample(l), greedy.sample(l)) << "seed " << seed;
  }
}

TEST(Sampler, FixedSeedReproducibleDifferentSeedDiffers) {
  const std::vector<float> l(50, 0.f);  // uniform: every draw is informative
  auto draws = [&](uint64_t seed) {
    SamplingOptions o;
    o.seed = seed;
    Sampler s(o);
    std::vector<int32_t> v;
    for (int i = 0; i < 200; ++i) v.push_back(s.sample(l));
    return v;
  };
  EXPECT_EQ(draws(7), draws(7));
  EXPECT_NE(draws(7), draws(8));
}

TEST(Sampler, GeneratorIsSeededXoshiro) {
  // Two samplers with one seed give one stream; the stream is not constant.
  SamplingOptions o;
  o.seed = 123;
  Sampler a(o), b(o);
  std::vector<uint64_t> va, vb;
  for (int i = 0; i < 8; ++i) {
    va.push_back(a.next_u64());
    vb.push_back(b.next_u64());
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va[0], va[1]);
}

// Softmax of l / T in double: the expected distribution without filters.
static std::vector<double> softmax(const std::vector<float>& l, double T) {
  double mx = -INFINITY;
  for (float x : l) mx = std::max(mx, double(x));
  std::vector<double> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += (p[i] = std::exp((l[i] - mx) / T));
  for (auto& x : p) x /= s;
  return p;
}

TEST(Sampler, TemperatureScalesTheDistribution) {
  const std::vector<float> l = {0.f, float(std::log(2.0)), -1.f, 0.5f};
  for (float T : {1.0f, 0.5f, 2.0f}) {
    SamplingOptions o;
    o.temperature = T;
    Sampler s(o);
    const auto p = s.distribution(l);
    const auto want = softmax(l, T);
    for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(p[i], want[i], 1e-7) << "T " << T << " i " << i;
  }
  // T = 0.5 on {0, ln 2}: probabilities 1/5 and 4/5 exactly (ln 2 rounded to float: 1e-7 tolerance).
  SamplingOptions o;
  o.temperature = 0.5f;
  Sampler s(o);
  const auto p = s.distribution(std::vector<float>{0.f, float(std::log(2.0))});
  EXPECT_NEAR(p[0], 0.2, 1e-7);
  EXPECT_NEAR(p[1], 0.8, 1e-7);
  // The empirical frequencies follow (10k draws; fixed seed, so this cannot flake).
  int ones = 0;
  for (int i = 0; i < 10000; ++i) ones += s.sample(std::vector<float>{0.f, float(std::log(2.0))}) == 1;
  EXPECT_NEAR(ones / 10000.0, 0.8, 0.02);
}

TEST(Sampler, TopKKeepsTheKLargest) {
  const std::vector<float> l = {1.f, 5.f, 3.f, 5.f, 4.f, 0.f};
  SamplingOptions o;
  o.top_k = 3;
  Sampler s(o);
  const auto p = s.distribution(l);
  // kept: ids 1, 3 (the two 5s) and 4 (the 4)
  const double z = 2 * std::exp(0.0) + std::exp(-1.0);
  EXPECT_NEAR(p[1], 1 / z, 1e-12);
  EXPECT_NEAR(p[3], 1 / z, 1e-12);
  EXPECT_NEAR(p[4], std::exp(-1.0) / z, 1e-12);
  EXPECT_EQ(p[0], 0.0);
  EXPECT_EQ(p[2], 0.0);
  EXPECT_EQ(p[5], 0.0);
  for (int i = 0; i < 500; ++i) {
    const int32_t t = s.sample(l);
    EXPECT_TRUE(t == 1 || t == 3 || t == 4) << t;
  }
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  // probabilities 0.5, 0.3, 0.15, 0.05 (in a shuffled order)
  const std::vector<float> l = {float(std::log(0.15)), float(std::log(0.5)), float(std::log(0.05)),
                                float(std::log(0.3))};
  auto dist = [&](float p) {
    SamplingOptions o;
    o.top_p = p;
    return Sampler(o).distribution(l);
  };
  // p = 0.7: 0.5 < 0.7 <= 0.8 -> {0.5, 0.3}
  auto d = dist(0.7f);
  EXPECT_NEAR(d[1], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(d[3], 0.3 / 0.8, 1e-6);
  EXPECT_EQ(d[0], 0.0);
  EXPECT_EQ(d[2], 0.0);
  // p = 0.9: 0.8 < 0.9 <= 0.95 -> three tokens
  d = dist(0.9f);
  EXPECT_NEAR(d[1], 0.5 / 0.95, 1e-6);
  EXPECT_NEAR(d[3], 0.3 / 0.95, 1e-6);
  EXPECT_NEAR(d[0], 0.15 / 0.95, 1e-6);
  EXPECT_EQ(d[2], 0.0);
  // p below the top probability: the top token alone
  d = dist(0.2f);
  EXPECT_EQ(d[1], 1.0);
  // p = 1: everything
  d = dist(1.0f);
  for (size_t i = 0; i < l.size(); ++i) EXPECT_GT(d[i], 0.0);
  // sampling never leaves the nucleus
  SamplingOptions o;
  o.top_p = 0.7f;
  o.seed = 11;
  Sampler s(o);
  int seen[4] = {0, 0, 0, 0};
  for (int i = 0; i < 2000; ++i) ++seen[s.sample(l)];
  EXPECT_EQ(seen[0], 0);
  EXPECT_EQ(seen[2], 0);
  EXPECT_NEAR(seen[1] / 2000.0, 0.625, 0.04);
}

TEST(Sampler, TopKThenTopPWithTemperature) {
  const std::vector<float> l = {2.f, 1.f, 0.f, -1.f, 3.f};
  SamplingOptions o;
  o.temperature = 2.f;
  o.top_k = 4;    // drops id 3
  o.top_p = 0.6f;
  Sampler s(o);
  const auto p = s.distribution(l);
  // softmax over {3, 2, 1, 0}/2 (ids 4, 0, 1, 2)
  std::vector<double> w = {std::exp(1.5), std::exp(1.0), std::exp(0.5), std::exp(0.0)};
  const double z = w[0] + w[1] + w[2] + w[3];
  ASSERT_LT(w[0] / z, 0.6);
  ASSERT_GE((w[0] + w[1]) / z, 0.6);  // -> ids 4 and 0 remain
  EXPECT_NEAR(p[4], w[0] / (w[0] + w[1]), 1e-12);
  EXPECT_NEAR(p[0], w[1] / (w[0] + w[1]), 1e-12);
  EXPECT_EQ(p[1] + p[2] + p[3], 0.0);
}

TEST(Sampler, RejectsBadOptionsAndRows) {
  SamplingOptions o;
  o.top_p = 0.f;
  EXPECT_THROW(Sampler{o}, Error);
  o.top_p = 1.5f;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.top_k = -1;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.temperature = NAN;
  EXPECT_THROW(Sampler{o}, Error);
  Sampler s(SamplingOptions{});
  EXPECT_THROW(s.sample(std::vector<float>{}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{NAN, NAN}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{-INFINITY, -INFINITY}), Error);
  // +inf dominates, -inf never drawn
  EXPECT_EQ(s.sample(std::vector<float>{0.f, INFINITY, 1.f}), 1);
  for (int i = 0; i < 100; ++i) EXPECT_NE(s.sample(std::vector<float>{0.f, -INFINITY, 1.f}), 1);
}

// ------------------------------------------------------------------- fakes for generate/ppl ----

namespace {

// Byte tokenizer: 0 <unk>, 1 <s>, 2 </s> (special), id b+3 = byte b. decode() replaces every byte
// of an invalid or incomplete UTF-8 sequence with U+FFFD, as byte-fallback decoders do.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
    return ids;
  }
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string bytes;
    for (int32_t id : ids) {
      if (id < 3) {
        if (!skip_special) bytes += id == 1 ? "<s>" : id == 2 ? "</s>" : "<unk>";
        continue;
      }
      bytes += char(id - 3);
    }
    std::string out;
    for (size_t i = 0; i < bytes.size();) {
      const unsigned char c = bytes[i];
      const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      bool ok = n > 0 && i + n <= bytes.size();
      for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(bytes[i + k]) >> 6) == 2;
      if (ok) {
        out.append(bytes, i, n);
        i += n;
      } else {
        out += "\xEF\xBF\xBD";
        ++i;
      }
    }
    return out;
  }
  int32_t vocab_size() const override { return 259; }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }
  std::string id_to_token(int32_t id) const override { return std::to_string(id); }
};

struct Calls {
  std::vector<std::vector<int32_t>> forwards;  // tokens of every forward
  std::vector<bool> all_logits;
  int resets = 0;
  int64_t capacity = 0;
};

// A model whose next token follows a script: after the prompt, the k-th generated position's
// logits put 10 on script[k] (0 elsewhere). For perplexity, logits depend on the token and on the
// position in the session, so a missing reset changes the result.
class FakeModel : public Model {
 public:
  FakeModel(int64_t ctx, std::vector<int32_t> script) : ctx_(ctx), script_(std::move(script)) {
    info_.precision = "fp32";
  }
  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return 259; }
  int64_t max_context() const override { return ctx_; }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }
  std::unique_ptr<Session> new_session(int64_t max_tokens) override;

  Calls calls;
  int64_t prompt_len = -1;  // set by the first forward

  // Logit of vocabulary entry v at session position pos after token t.
  static float ppl_logit(int64_t pos, int32_t t, int64_t v) {
    return float(std::sin(0.37 * double(v) + 1.3 * double(t) + 0.11 * double(pos)) * 3.0);
  }

 private:
  friend class FakeSession;
  int64_t ctx_;
  std::vector<int32_t> script_;
  ModelInfo info_;
};

class FakeSession : public Session {
 public:
  FakeSession(FakeModel& m, int64_t cap) : m_(m), cap_(cap) {}
  void forward(std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits) override {
    if (pos_ + int64_t(tokens.size()) > cap_) throw Error("fake session: KV cache full");
    m_.calls.forwards.emplace_back(tokens.begin(), tokens.end());
    m_.calls.all_logits.push_back(all_logits);
    if (m_.prompt_len < 0) m_.prompt_len = int64_t(tokens.size());
    const int64_t V = 259;
    const int64_t rows = all_logits ? int64_t(tokens.size()) : 1;
    logits->assign(size_t(rows * V), 0.f);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = all_logits ? r : int64_t(tokens.size()) - 1;
      const int64_t pos = pos_ + i;
      float* row = logits->data() + r * V;
      if (m_.script_.empty()) {
        for (int64_t v = 0; v < V; ++v) row[v] = FakeModel::ppl_logit(pos, tokens[size_t(i)], v);
      } else {
        const int64_t k = pos + 1 - m_.prompt_len;  // index of the token these logits predict
        row[size_t(m_.script_[size_t(std::min<int64_t>(k, int64_t(m_.script_.size()) - 1))])] = 10.f;
      }
    }
    pos_ += int64_t(tokens.size());
  }
  void reset() override {
    pos_ = 0;
    ++m_.calls.resets;
  }
  int64_t position() const override { return pos_; }

 private:
  FakeModel& m_;
  int64_t cap_;
  int64_t pos_ = 0;
};

std::unique_ptr<Session> FakeModel::new_session(int64_t max_tokens) {
  calls.capacity = max_tokens ? max_tokens : ctx_;
  return std::make_unique<FakeSession>(*this, calls.capacity);
}

std::vector<int32_t> bytes_of(std::string_view s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(int32_t(c) + 3);
  return v;
}

GenerateOptions greedy_opts(int n) {
  GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.greedy = true;
  return o;
}

}  // namespace

// ----------------------------------------------------------------------------------- generate ----

TEST(Generate, EmptyPromptStartsFromBosAndPrefillsOnce) {
  auto script = bytes_of("Hi!");
  script.push_back(2);
  FakeModel m(64, script);
  ByteTokenizer tok;
  auto r = generate(m, tok, "", greedy_opts(10));
  EXPECT_EQ(r.prompt_ids, std::vector<int32_t>{1});
  EXPECT_EQ(r.text, "Hi!");
  EXPECT_TRUE(r.stopped_at_eos);
  ASSERT_EQ(r.new_ids.size(), 4u);  // H i ! </s>
  EXPECT_EQ(r.new_ids.back(), 2);
  ASSERT_FALSE(m.calls.forwards.empty());
  EXPECT_EQ(m.calls.forwards[0], std::vector<int32_t>{1});
  // one forward for the prompt, then one per new token except the last
  EXPECT_EQ(m.calls.forwards.size(), 4u);
  EXPECT_EQ(r.decode_steps, 3);
  for (size_t i = 1; i < m.calls.forwards.size(); ++i) EXPECT_EQ(m.calls.forwards[i].size(), 1u);
  EXPECT_GE(r.prefill_seconds, 0.0);
  EXPECT_GE(r.decode_seconds, 0.0);
}

TEST(Generate, PromptEncodedWithSpecialTokensInOneForward) {
  FakeModel m(64, bytes_of("xyz"));
  ByteTokenizer tok;
  auto r = generate(m, tok, "abc", greedy_opts(3));
  const std::vector<int32_t> want = {1, 'a' + 3, 'b' + 3, 'c' + 3};
  EXPECT_EQ(r.prompt_ids, want);
  ASSERT_FALSE(m.calls.forwards.empty());
  EXPECT_EQ(m.calls.forwards[0], want);  // the whole prompt in the first forward
  EXPECT_EQ(r.text, "xyz");
  EXPECT_FALSE(r.stopped_at_eos);
  EXPECT_EQ(r.new_ids.size(), 3u);
}

TEST(Generate, EosIgnoredWhenAsked) {
  FakeModel m(64, {2});  // always EOS
  ByteTokenizer tok;
  auto o = greedy_opts(5);
  o.stop_at_eos = false;
  auto r = generate(m, tok, "", o);
  EXPECT_EQ(r.new_ids, std::vector<int32_t>(5, 2));
  EXPECT_FALSE(r.stopped_at_eos);
  EXPECT_EQ(r.text, "");
}

TEST(Generate, StopsAtAnyOfTheModelsEosIds) {
  class TwoEos : public FakeModel {
   public:
    using FakeModel::FakeModel;
    std::vector<int32_t> eos_ids() const override { return {2, 'x' + 3}; }  // 'x' ends it too
  };
  TwoEos m(64, bytes_of("abxcd"));
  ByteTokenizer tok;
  auto r = generate(m, tok, "", greedy_opts(10));
  EXPECT_TRUE(r.stopped_at_eos);
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(r.new_ids.size(), 3u);
}

TEST(Generate, NewTokensCappedByContext) {
  FakeModel m(8, bytes_of("a"));
  ByteTokenizer tok;
  auto r = generate(m, tok, "abc", greedy_opts(100));  // 4 prompt tokens
  EXPECT_EQ(r.new_ids.size(), 4u);
  EXPECT_LE(m.calls.capacity, 8);
  EXPECT_EQ(r.text, "aaaa");
  EXPECT_THROW(generate(m, tok, "abcdefgh", greedy_opts(1)), Error);  // 9 prompt tokens
  FakeModel m2(8, bytes_of("a"));
  auto r0 = generate(m2, tok, "a", greedy_opts(0));
  EXPECT_TRUE(r0.new_ids.empty());
  EXPECT_THROW(generate(m2, tok, "a", greedy_opts(-1)), Error);
}

TEST(Generate, StreamHoldsBackIncompleteUtf8) {
  auto script = bytes_of("\xC3\xA9 \xE2\x82\xAC\xF0\x9F\x98\x80");  // "é €😀"
  script.push_back(2);
  FakeModel m(64, script);
  ByteTokenizer tok;
  std::vector<std::string> pieces;
  auto r = generate(m, tok, "", greedy_opts(20), [&](std::string_view p) { pieces.emplace_back(p); });
  const std::vector<std::string> want = {"\xC3\xA9", " ", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
  EXPECT_EQ(pieces, want);
  EXPECT_EQ(r.text, "\xC3\xA9 \xE2\x82\xAC\xF0\x9F\x98\x80");
}

TEST(Generate, IncompleteTailFlushedAtTheEnd) {
  FakeModel m(64, bytes_of("a\xE2\x82"));  // ends inside a character when the budget runs out
  ByteTokenizer tok;
  std::string streamed;
  auto r = generate(m, tok, "", greedy_opts(3), [&](std::string_view p) { streamed += p; });
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.text, "a\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(Generate, SamplingIsSeeded) {
  // A model with flat logits: sampled text depends only on the seed.
  class Flat : public FakeModel {
   public:
    Flat() : FakeModel(64, {}) {}
  };
  ByteTokenizer tok;
  auto run = [&](uint64_t seed) {
    Flat m;
    GenerateOptions o;
    o.max_new_tokens = 16;
    o.stop_at_eos = false;
    o.sampling.seed = seed;
    return generate(m, tok, "x", o).new_ids;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

TEST(TextStream, ContinuationKeepsTextAfterThePrompt) {
  ByteTokenizer tok;
  const std::vector<int32_t> prompt = {1, 'h' + 3, 'i' + 3};
  TextStream s(tok, prompt);
  EXPECT_EQ(s.push(' ' + 3), " ");
  EXPECT_EQ(s.push(0xC3 + 3), "");
  EXPECT_EQ(s.push(0xA9 + 3), "\xC3\xA9");
  EXPECT_EQ(s.finish(), "");
  EXPECT_EQ(s.emitted(), " \xC3\xA9");
  EXPECT_TRUE(ends_with_replacement_char("ab\xEF\xBF\xBD"));
  EXPECT_FALSE(ends_with_replacement_char("\xEF\xBF"));
}

// --------------------------------------------------------------------------------- perplexity ----

// Independent reference: the protocol written out directly, in long double.
static double reference_ppl(const std::vector<int32_t>& t, int64_t ctx, int64_t* scored) {
  long double nll = 0;
  int64_t count = 0;
  for (size_t b = 0; b < t.size(); b += size_t(ctx)) {
    const size_t e = std::min(t.size(), b + size_t(ctx));
    for (size_t i = b; i + 1 < e; ++i) {
      long double mx = -INFINITY, s = 0;
      for (int64_t v = 0; v < 259; ++v) mx = std::max<long double>(mx, FakeModel::ppl_logit(int64_t(i - b), t[i], v));
      for (int64_t v = 0; v < 259; ++v) s += std::exp((long double)FakeModel::ppl_logit(int64_t(i - b), t[i], v) - mx);
      nll += std::log(s) + mx - FakeModel::ppl_logit(int64_t(i - b), t[i], t[i + 1]);
      ++count;
    }
  }
  *scored = count;
  return double(std::exp(nll / count));
}

TEST(Perplexity, NonOverlappingWindowsScoredAlone) {
  std::vector<int32_t> t;
  for (int i = 0; i < 12; ++i) t.push_back(3 + (i * 37) % 250);
  FakeModel m(64, {});
  std::vector<std::pair<int64_t, int64_t>> prog;
  auto r = perplexity(m, t, 5, [&](int64_t d, int64_t n) { prog.emplace_back(d, n); });
  int64_t scored = 0;
  const double want = reference_ppl(t, 5, &scored);
  EXPECT_EQ(scored, 9);  // 4 + 4 + 1
  EXPECT_EQ(r.tokens_scored, 9);
  EXPECT_NEAR(r.ppl, want, 1e-9 * want);
  EXPECT_NEAR(r.nll_sum, std::log(want) * 9, 1e-9);
  ASSERT_EQ(m.calls.forwards.size(), 3u);
  EXPECT_EQ(m.calls.forwards[0], std::vector<int32_t>(t.begin(), t.begin() + 5));
  EXPECT_EQ(m.calls.forwards[2], std::vector<int32_t>(t.begin() + 10, t.end()));
  for (bool a : m.calls.all_logits) EXPECT_TRUE(a);
  EXPECT_EQ(m.calls.resets, 3);
  EXPECT_EQ(prog.back(), (std::pair<int64_t, int64_t>{3, 3}));
}

TEST(Perplexity, TrailingSingleTokenWindowScoresNothing) {
  std::vector<int32_t> t;
  for (int i = 0; i < 11; ++i) t.push_back(3 + (i * 53) % 250);
  FakeModel m(64, {});
  auto r = perplexity(m, t, 5);
  int64_t scored = 0;
  const double want = reference_ppl(t, 5, &scored);
  EXPECT_EQ(r.tokens_scored, 8);
  EXPECT_NEAR(r.ppl, want, 1e-9 * want);
}

TEST(Perplexity, UniformLogitsGiveVocabSize) {
  class Uniform : public Model {
   public:
    const ModelInfo& info() const override { return info_; }
    int64_t vocab_size() const override { return 100; }
    int64_t max_context() const override { return 16; }
    int32_t bos_id() const override { return 1; }
    int32_t eos_id() const override { return 2; }
    std::unique_ptr<Session> new_session(int64_t) override {
      struct S : Session {
        void forward(std::span<const int32_t> t, std::vector<float>* l, bool all) override {
          l->assign((all ? t.size() : 1) * 100, 0.25f);
        }
        void reset() override {}
        int64_t position() const override { return 0; }
      };
      return std::make_unique<S>();
    }
    ModelInfo info_;
  } m;
  std::vector<int32_t> t(40, 7);
  auto r = perplexity(m, t, 16);
  EXPECT_NEAR(r.ppl, 100.0, 1e-9);
  EXPECT_EQ(r.tokens_scored, 15 + 15 + 7);
}

TEST(Perplexity, RejectsBadArguments) {
  FakeModel m(8, {});
  std::vector<int32_t> t = {3, 4, 5, 6};
  EXPECT_THROW(perplexity(m, t, 1), Error);
  EXPECT_THROW(perplexity(m, t, 0), Error);
  EXPECT_THROW(perplexity(m, t, 9), Error);  // beyond the context
  EXPECT_THROW(perplexity(m, std::vector<int32_t>{3}, 4), Error);
  EXPECT_THROW(perplexity(m, std::vector<int32_t>{3, 400}, 4), Error);
  EXPECT_THROW(perplexity(m, std::vector<int32_t>{3, -1}, 4), Error);
}

// ------------------------------------------------------------------ stories260K reference ----

namespace {
const std::string kShared = LLMINT8_SHARED_DIR;

// The reference's text: the first 500 LAMBADA test passages joined with "\n\n".
std::string lambada_500() {
  std::ifstream f(kShared + "/data/lambada/lambada_test.jsonl");
  std::string line, out;
  for (int i = 0; i < 500 && std::getline(f, line); ++i) {
    if (i) out += "\n\n";
    out += nlohmann::json::parse(line)["text"].get<std::string>();
  }
  return out;
}
}  // namespace

class Stories : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kShared + "/models/stories260K/config.json") ||
        !std::filesystem::exists(kShared + "/reference/stories260K_reference.json"))
      GTEST_SKIP() << "shared data not found at " << kShared << " (LLMINT8_SHARED_DIR)";
    std::ifstream f(kShared + "/reference/stories260K_reference.json");
    ref = nlohmann::json::parse(f);
  }
  nlohmann::json ref;
};

TEST_F(Stories, GreedyFromBosMatchesTransformers) {
  for (Precision p : {Precision::F32, Precision::Int8}) {
    LoadOptions lo;
    lo.precision = p;
    auto model = Model::load(kShared + "/models/stories260K", lo);
    auto tok = Tokenizer::load(kShared + "/models/stories260K");
    std::string streamed;
    auto r = generate(*model, *tok, "", greedy_opts(40), [&](std::string_view s) { streamed += s; });
    EXPECT_EQ(r.text, ref["greedy_from_bos_text_40_new_tokens"].get<std::string>()) << precision_name(p);
    EXPECT_EQ(streamed, r.text);
    std::vector<int32_t> ids = r.prompt_ids;
    ids.insert(ids.end(), r.new_ids.begin(), r.new_ids.end());
    const auto want = ref["greedy_from_bos_first_ids"].get<std::vector<int32_t>>();
    ASSERT_GE(ids.size(), want.size());
    EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + ptrdiff_t(want.size())), want) << precision_name(p);
  }
}

TEST_F(Stories, PerplexityOnLambadaMatchesTransformers) {
  auto tok = Tokenizer::load(kShared + "/models/stories260K");
  const auto ids = tok->encode(lambada_500(), true);
  const auto& pr = ref["perplexity_fp32"];
  LoadOptions lo;
  lo.precision = Precision::F32;
  auto model = Model::load(kShared + "/models/stories260K", lo);
  auto r = perplexity(*model, ids, pr["ctx"].get<int64_t>());
  EXPECT_EQ(r.tokens_scored, pr["tokens_scored"].get<int64_t>());
  const double want = pr["ppl"].get<double>();
  EXPECT_NEAR(r.ppl, want, 1e-4 * want);

  // LLM.int8() at threshold 6 stays close to fp32 (the method's claim: no degradation); on the
  // first 40 windows to keep the test short.
  const std::vector<int32_t> head(ids.begin(), ids.begin() + 40 * 256);
  const auto r32 = perplexity(*model, head, 256);
  lo.precision = Precision::Int8;
  auto m8 = Model::load(kShared + "/models/stories260K", lo);
  const auto r8 = perplexity(*m8, head, 256);
  EXPECT_EQ(r8.tokens_scored, 40 * 255);
  EXPECT_NEAR(r8.ppl, r32.ppl, 0.005 * r32.ppl);
}

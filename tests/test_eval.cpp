// Evaluation metrics (include/llmint8/eval.h) on hand-computed tiny cases, the log-likelihood
// helper on a fake model whose probabilities are known, and `eval --compare int8,fp32` on
// stories260K.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "llmint8/error.h"
#include "llmint8/eval.h"

namespace fs = std::filesystem;
using namespace llmint8;
using namespace llmint8::eval;

namespace {

// A model over `vocab` tokens whose next-token logits are [0, ..., 0, log 3] after every token
// (so p(last) = 3 / (vocab + 2), p(other) = 1 / (vocab + 2)); it records what it was fed.
class FakeModel;
class FakeSession final : public Session {
 public:
  explicit FakeSession(FakeModel& m) : m_(m) {}
  void forward(std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits) override;
  void reset() override { pos_ = 0; }
  int64_t position() const override { return pos_; }

 private:
  FakeModel& m_;
  int64_t pos_ = 0;
};

class FakeModel final : public Model {
 public:
  FakeModel(int64_t vocab, int64_t ctx) : vocab_(vocab), ctx_(ctx) {}
  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return vocab_; }
  int64_t max_context() const override { return ctx_; }
  int32_t bos_id() const override { return 0; }
  int32_t eos_id() const override { return -1; }
  std::unique_ptr<Session> new_session(int64_t) override { return std::make_unique<FakeSession>(*this); }
  std::vector<std::vector<int32_t>> fed;
  int64_t vocab_, ctx_;
  ModelInfo info_;
};

void FakeSession::forward(std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits) {
  m_.fed.emplace_back(tokens.begin(), tokens.end());
  const int64_t V = m_.vocab_size();
  const int64_t rows = all_logits ? int64_t(tokens.size()) : 1;
  logits->assign(size_t(rows * V), 0.f);
  for (int64_t r = 0; r < rows; ++r) (*logits)[size_t(r * V + V - 1)] = std::log(3.0f);
  pos_ += int64_t(tokens.size());
}

std::string shared_dir() { return LLMINT8_SHARED_DIR; }

}  // namespace

TEST(EvalMetrics, MeanStderrIsSampleStdOverRootN) {
  // x = 1,0,1,1: mean 0.75, sample variance (3 * 0.0625 + 0.5625) / 3 = 0.25 -> 0.5 / sqrt(4).
  const double x[] = {1, 0, 1, 1};
  EXPECT_DOUBLE_EQ(mean(x), 0.75);
  EXPECT_DOUBLE_EQ(mean_stderr(x), 0.25);
  const double y[] = {2, 4, 6};  // variance 4 -> 2 / sqrt(3)
  EXPECT_NEAR(mean_stderr(y), 2.0 / std::sqrt(3.0), 1e-15);
  const double one[] = {1};
  EXPECT_TRUE(std::isnan(mean_stderr(one)));
}

TEST(EvalMetrics, ArgmaxTakesTheFirstOnTies) {
  const double x[] = {-3, -1, -1, -2};
  EXPECT_EQ(argmax(x), 1u);
}

TEST(EvalMetrics, AccNormDividesByTheChoiceLengthInCharacters) {
  // ll -6 over "abc" (3) = -2 beats -10 over "abcdefghij" ... no: -10/10 = -1 wins.
  const std::string c1[] = {"abc", "abcdefghij"};
  const double ll1[] = {-6, -10};
  EXPECT_EQ(argmax(ll1), 0u);                  // acc picks the higher raw loglikelihood
  EXPECT_EQ(argmax_normalized(ll1, c1), 1u);  // acc_norm: -2 vs -1
  // Non-ASCII: "héé" is 3 characters (5 bytes): -6/3 = -2 beats "abcd" -9/4 = -2.25; by bytes
  // -6/5 = -1.2 would also win, so use a case where characters and bytes disagree:
  // "ééé" (3 chars, 6 bytes) with -7.5 -> -2.5 per char (-1.25 per byte) vs "ab" -4.6 -> -2.3.
  const std::string c2[] = {"\xC3\xA9\xC3\xA9\xC3\xA9", "ab"};
  const double ll2[] = {-7.5, -4.6};
  EXPECT_EQ(argmax_normalized(ll2, c2), 1u);
  EXPECT_EQ(utf8_length("h\xC3\xA9llo"), 5);
  EXPECT_EQ(utf8_length("\xFF" "a"), 2);  // an invalid byte counts as one
  EXPECT_THROW(argmax_normalized(ll2, std::span<const std::string>(c2, 1)), Error);
}

TEST(EvalMetrics, WordCountFollowsPythonSplitOnWhitespaceRuns) {
  EXPECT_EQ(split_word_count("a b  c"), 3);
  EXPECT_EQ(split_word_count(" a"), 2);     // re.split gives ['', 'a']
  EXPECT_EQ(split_word_count("a\n \nb\n"), 3);  // ['a', 'b', '']
  EXPECT_EQ(split_word_count(""), 1);
}

TEST(EvalMetrics, WordAndBytePerplexity) {
  // ll = -12 over 4 words and 6 bytes: exp(3), exp(2), 2 / ln 2 bits per byte.
  const PerplexityMetrics m = perplexity_metrics(-12.0, 4, 6);
  EXPECT_NEAR(m.word_perplexity, std::exp(3.0), 1e-12);
  EXPECT_NEAR(m.byte_perplexity, std::exp(2.0), 1e-12);
  EXPECT_NEAR(m.bits_per_byte, 2.0 / std::log(2.0), 1e-12);
  EXPECT_THROW(perplexity_metrics(-1, 0, 1), Error);
}

TEST(EvalRolling, WindowsMatchTheHarnessConstruction) {
  // tokens 10..16, prefix 0, max_len 3 (get_rolling_token_windows with context_len 1):
  //   ([0,10,11], [10,11,12]), ([12,13,14], [13,14,15]), ([13,14,15], [16]).
  const std::vector<int32_t> t = {10, 11, 12, 13, 14, 15, 16};
  const auto w = rolling_windows(t, 0, 3);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].input, (std::vector<int32_t>{0, 10, 11}));
  EXPECT_EQ(w[0].target, (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(w[1].input, (std::vector<int32_t>{12, 13, 14}));
  EXPECT_EQ(w[1].target, (std::vector<int32_t>{13, 14, 15}));
  EXPECT_EQ(w[2].input, (std::vector<int32_t>{13, 14, 15}));
  EXPECT_EQ(w[2].target, (std::vector<int32_t>{16}));
  // Short text: one window.
  const std::vector<int32_t> s = {5, 6};
  const auto w2 = rolling_windows(s, 1, 8);
  ASSERT_EQ(w2.size(), 1u);
  EXPECT_EQ(w2[0].input, (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(w2[0].target, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(rolling_windows(std::vector<int32_t>{}, 0, 4).empty());
}

TEST(EvalLoglikelihood, KnownProbabilitiesGreedinessAndTruncation) {
  FakeModel m(4, 4);  // p(3) = 3/6, p(0..2) = 1/6 each
  auto s = m.new_session(0);
  const std::vector<int32_t> ctx = {1, 2}, cont = {3, 0};
  Loglikelihood r = loglikelihood(m, *s, ctx, cont, 0);
  EXPECT_NEAR(r.logprob, std::log(0.5) + std::log(1.0 / 6.0), 1e-6);
  EXPECT_FALSE(r.is_greedy);
  ASSERT_EQ(m.fed.back(), (std::vector<int32_t>{1, 2, 3}));  // (ctx + cont)[:-1]
  r = loglikelihood(m, *s, ctx, std::vector<int32_t>{3, 3}, 0);
  EXPECT_TRUE(r.is_greedy);
  // Long context: (ctx + cont)[-(4 + 1):][:-1] = the 4 tokens before the last.
  const std::vector<int32_t> long_ctx = {1, 1, 2, 2, 1, 2};
  loglikelihood(m, *s, long_ctx, std::vector<int32_t>{3, 0}, 0);
  EXPECT_EQ(m.fed.back(), (std::vector<int32_t>{2, 1, 2, 3}));
  // Continuation longer than the context of 4: passes of 4 targets, input all[e-5, e-1).
  m.fed.clear();
  r = loglikelihood(m, *s, std::vector<int32_t>{1, 2}, std::vector<int32_t>{3, 3, 0, 3, 3, 1}, 0);
  EXPECT_NEAR(r.logprob, 4 * std::log(0.5) + 2 * std::log(1.0 / 6.0), 1e-5);
  ASSERT_EQ(m.fed.size(), 2u);
  EXPECT_EQ(m.fed[0], (std::vector<int32_t>{2, 3, 3, 0}));  // targets 3 3 0 3
  EXPECT_EQ(m.fed[1], (std::vector<int32_t>{3, 0, 3, 3}));  // targets 3 1
  // Empty context: the prefix token stands in.
  loglikelihood(m, *s, std::vector<int32_t>{}, std::vector<int32_t>{3}, 0);
  EXPECT_EQ(m.fed.back(), (std::vector<int32_t>{0}));
  EXPECT_THROW(loglikelihood(m, *s, ctx, std::vector<int32_t>{}, 0), Error);
  EXPECT_THROW(loglikelihood(m, *s, ctx, std::vector<int32_t>{9}, 0), Error);
}

TEST(EvalLoglikelihood, RollingSumCoversEveryTokenOnce) {
  FakeModel m(4, 3);
  auto s = m.new_session(0);
  const std::vector<int32_t> t = {3, 1, 3, 3, 2, 0, 3};  // 4 threes, 3 others
  const double ll = rolling_loglikelihood(m, *s, t, 0);
  EXPECT_NEAR(ll, 4 * std::log(0.5) + 3 * std::log(1.0 / 6.0), 1e-5);
}

TEST(EvalWikitext, DetokenizerAsTheHarness) {
  EXPECT_EQ(wikitext_detokenize("a @-@ b , c ( d ) \" e \" 1 @,@ 000 @.@ 5"), "a-b, c (d) \"e\" 1,000.5");
  EXPECT_EQ(wikitext_detokenize(" = = Sub = = \n"), " == Sub ==\n");
  EXPECT_EQ(wikitext_detokenize("Teddy 's Story"), "Teddy's Story");
  EXPECT_EQ(wikitext_detokenize("the players ' union"), "the players' union");
}

TEST(EvalWikitext, DocumentsSplitAtTopLevelHeadings) {
  const std::string raw = " \n = A = \n \n text \n = = S = = \n more \n = B = \n b \n";
  const auto d = wikitext_documents(raw);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0], " = A = \n \n text \n = = S = = \n more \n");
  EXPECT_EQ(d[1], " = B = \n b \n");
}

TEST(EvalCompare, WithinStderr) {
  std::vector<Metric> a = {{"t", "acc", 0.50, 0.05, true, 10}, {"t", "ppl", 10, std::nullopt, false, 10}};
  std::vector<Metric> b = {{"t", "acc", 0.56, 0.04, true, 10}, {"t", "ppl", 10.5, std::nullopt, false, 10}};
  const auto rows = compare(a, b);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_NEAR(rows[0].diff, 0.06, 1e-12);
  EXPECT_DOUBLE_EQ(*rows[0].stderr_, 0.05);
  EXPECT_FALSE(*rows[0].within);
  EXPECT_FALSE(rows[1].within.has_value());
  b[0].value = 0.54;
  EXPECT_TRUE(*compare(a, b)[0].within);
}

namespace {
nlohmann::json run_cli(const std::string& args) {
  const std::string cmd = std::string(LLMINT8_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int rc = pclose(p);
  if (rc != 0) throw std::runtime_error("exit " + std::to_string(rc) + ": " + out);
  return nlohmann::json::parse(out);
}
}  // namespace

// `eval --compare int8,fp32 --limit 20` on stories260K (WikiText: one document, the 20 first
// take minutes on a shared CI core).
TEST(EvalCli, CompareInt8Fp32OnStories260K) {
  const std::string model = shared_dir() + "/models/stories260K";
  if (!fs::exists(model + "/model.safetensors") || !fs::exists(shared_dir() + "/data/piqa/valid.jsonl"))
    GTEST_SKIP() << "shared data not found at " << shared_dir() << " (set LLMINT8_SHARED_DIR)";
  const std::string common = "eval -m " + model + " --data " + shared_dir() + "/data --compare int8,fp32 --json ";
  const auto j1 = run_cli(common + "--tasks lambada,piqa --limit 20");
  const auto j2 = run_cli(common + "--tasks wikitext --limit 1");
  EXPECT_EQ(j1["a"], "int8");
  EXPECT_EQ(j1["b"], "fp32");
  ASSERT_EQ(j1["rows"].size(), 4u) << j1.dump();
  ASSERT_EQ(j2["rows"].size(), 3u) << j2.dump();
  nlohmann::json rows = j1["rows"];
  for (const auto& r : j2["rows"]) rows.push_back(r);
  for (const auto& r : rows) {
    EXPECT_EQ(r["n"], r["task"] == "wikitext" ? 1 : 20) << r.dump();
    const double a = r["a"], b = r["b"];
    EXPECT_TRUE(std::isfinite(a) && std::isfinite(b)) << r.dump();
    EXPECT_NEAR(double(r["diff"]), b - a, 1e-12);
    if (r["metric"] == "acc" || r["metric"] == "acc_norm") {
      EXPECT_GE(a, 0.0);
      EXPECT_LE(a, 1.0);
      EXPECT_TRUE(r["within_stderr"].get<bool>()) << r.dump();
    } else {
      // Perplexity-type metrics of int8 within 2% of fp32 on this model.
      EXPECT_NEAR(a / b, 1.0, 0.02) << r.dump();
      EXPECT_GT(a, 0.0);
    }
  }
}

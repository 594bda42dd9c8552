// Model loading and the forward pass: stories260K against Hugging Face transformers' reference
// figures (shared/reference/stories260K_reference.json), the tiny random checkpoints of every
// family against transformers' logits (tests/fixtures/<family>/), and config/checkpoint errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <cstring>
#include <random>

#include "fixture_ref.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "llmint8/error.h"
#include "llmint8/model.h"
#include "llmint8/tokenizer.h"
#include "model/config.h"
#include "model/transformer.h"

namespace fs = std::filesystem;
using namespace llmint8;
using nlohmann::json;

namespace {

const std::string kShared = LLMINT8_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K";
const std::string kReference = kShared + "/reference/stories260K_reference.json";

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

LoadOptions opts(Precision p, int threads = 2, std::vector<std::string> skip = {}) {
  LoadOptions o;
  o.precision = p;
  o.threads = threads;
  o.skip_modules = std::move(skip);
  return o;
}

int32_t argmax(const std::vector<float>& v) {
  return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<int32_t> greedy(Model& m, int n_total) {
  auto s = m.new_session();
  std::vector<int32_t> ids = {m.bos_id()};
  std::vector<float> logits;
  s->forward(ids, &logits);
  while (int(ids.size()) < n_total) {
    ids.push_back(argmax(logits));
    const int32_t t = ids.back();
    s->forward(std::span<const int32_t>(&t, 1), &logits);
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------
// stories260K

class Stories : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kStories + "/model.safetensors") || !fs::exists(kReference))
      GTEST_SKIP() << "shared data absent: " << kStories << " / " << kReference;
    ref_ = read_json(kReference);
  }
  json ref_;
};

TEST_F(Stories, Fp32LogitsAfterBosMatchTransformers) {
  auto m = Model::load(kStories, opts(Precision::F32, 2));
  EXPECT_EQ(m->info().architecture, "LlamaForCausalLM");
  EXPECT_EQ(m->vocab_size(), 512);
  EXPECT_EQ(m->bos_id(), 1);
  EXPECT_EQ(m->eos_id(), 2);
  EXPECT_EQ(m->max_context(), 512);
  auto s = m->new_session();
  std::vector<float> logits;
  const int32_t bos = 1;
  s->forward(std::span<const int32_t>(&bos, 1), &logits);
  ASSERT_EQ(logits.size(), 512u);
  std::vector<int32_t> order(512);
  for (int i = 0; i < 512; ++i) order[size_t(i)] = i;
  std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                    [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  const auto& top = ref_["bos_next_token_top3"];
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(order[size_t(i)], top["ids"][size_t(i)].get<int32_t>()) << "rank " << i;
    EXPECT_NEAR(logits[size_t(top["ids"][size_t(i)].get<int>())], top["logits"][size_t(i)].get<double>(), 1e-3)
        << "rank " << i;
  }
  std::printf("stories260K fp32 top-3 after BOS: %d %.5f, %d %.5f, %d %.5f\n", order[0],
              logits[size_t(order[0])], order[1], logits[size_t(order[1])], order[2], logits[size_t(order[2])]);
}

TEST_F(Stories, GreedyFromBosFp32AndInt8) {
  const auto want = ref_["greedy_from_bos_first_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(want.size(), 12u);
  for (Precision p : {Precision::F32, Precision::Int8}) {
    auto m = Model::load(kStories, opts(p, 2));
    EXPECT_EQ(greedy(*m, 12), want) << precision_name(p);
  }
}

TEST_F(Stories, PrefillEqualsTokenByTokenDecode) {
  const auto ids = ref_["greedy_from_bos_first_ids"].get<std::vector<int32_t>>();
  // Int8 with threshold 0: each row is quantized on its own. (With a threshold, a column that is
  // an outlier in any row of a prefill chunk is carried in 16-bit for every row of it, as in
  // bitsandbytes, so chunking legitimately changes int8 results.)
  for (Precision p : {Precision::F32, Precision::Int8}) {
    LoadOptions o = opts(p, 2);
    o.threshold = 0.f;
    auto m = Model::load(kStories, o);
    auto s = m->new_session();
    std::vector<float> all;
    s->forward(ids, &all, /*all_logits=*/true);
    ASSERT_EQ(all.size(), ids.size() * 512);
    EXPECT_EQ(s->position(), int64_t(ids.size()));
    // Decode one token at a time after a 3-token prefill chunk.
    auto d = m->new_session();
    std::vector<float> lg;
    d->forward(std::span<const int32_t>(ids.data(), 3), &lg);
    for (size_t k = 3; k <= ids.size(); ++k) {
      for (int v = 0; v < 512; ++v)
        ASSERT_NEAR(lg[size_t(v)], all[(k - 1) * 512 + size_t(v)], 2e-4)
            << precision_name(p) << " position " << k - 1 << " id " << v;
      if (k < ids.size()) d->forward(std::span<const int32_t>(&ids[k], 1), &lg);
    }
    // reset() starts over.
    d->reset();
    EXPECT_EQ(d->position(), 0);
    d->forward(std::span<const int32_t>(ids.data(), 1), &lg);
    for (int v = 0; v < 512; ++v) ASSERT_NEAR(lg[size_t(v)], all[size_t(v)], 2e-4);
  }
}

// The protocol of stories260K_reference.json: non-overlapping windows of ctx tokens, each scored
// alone; ppl = exp(mean NLL of positions 1..len-1 of every window).
std::pair<double, int64_t> window_perplexity(Model& m, const std::vector<int32_t>& toks, int64_t ctx) {
  double nll = 0;
  int64_t scored = 0;
  auto s = m.new_session(ctx);
  std::vector<float> lg;
  const int64_t V = m.vocab_size();
  for (size_t w0 = 0; w0 < toks.size(); w0 += size_t(ctx)) {
    const size_t len = std::min(toks.size() - w0, size_t(ctx));
    if (len < 2) break;
    s->reset();
    s->forward(std::span<const int32_t>(&toks[w0], len), &lg, /*all_logits=*/true);
    for (size_t t = 0; t + 1 < len; ++t) {
      const float* row = &lg[t * size_t(V)];
      const double mx = *std::max_element(row, row + V);
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      nll += mx + std::log(z) - double(row[toks[w0 + t + 1]]);
      ++scored;
    }
  }
  return {std::exp(nll / double(scored)), scored};
}

std::string lambada_500() {
  std::ifstream f(kShared + "/data/lambada/lambada_test.jsonl");
  std::string line, text;
  for (int n = 0; n < 500 && std::getline(f, line); ++n) {
    if (n) text += "\n\n";
    text += json::parse(line)["text"].get<std::string>();
  }
  return text;
}

TEST_F(Stories, PerplexityOnLambadaFp32AndInt8) {
  if (!fs::exists(kShared + "/data/lambada/lambada_test.jsonl")) GTEST_SKIP() << "lambada absent";
  auto tok = Tokenizer::load(kStories);
  const std::vector<int32_t> toks = tok->encode(lambada_500());
  ASSERT_FALSE(toks.empty());
  EXPECT_EQ(toks[0], 1);  // BOS once at the start
  const auto& want = ref_["perplexity_fp32"];
  const int64_t ctx = want["ctx"].get<int64_t>();
  // One thread: the windows are small, and CI's two cores are shared with other tests.
  auto f32 = Model::load(kStories, opts(Precision::F32, 1));
  const auto [p32, n32] = window_perplexity(*f32, toks, ctx);
  auto i8 = Model::load(kStories, opts(Precision::Int8, 1));
  const auto [p8, n8] = window_perplexity(*i8, toks, ctx);
  std::printf("stories260K lambada-500 ppl: fp32 %.6f (transformers %.6f), int8 %.6f (%+.3f%%), "
              "%lld tokens scored\n",
              p32, want["ppl"].get<double>(), p8, 100.0 * (p8 / p32 - 1.0), (long long)n32);
  EXPECT_EQ(n32, want["tokens_scored"].get<int64_t>());
  EXPECT_EQ(n8, n32);
  EXPECT_NEAR(p32, want["ppl"].get<double>(), 1e-4 * want["ppl"].get<double>());
  EXPECT_NEAR(p8, p32, 5e-3 * p32);
}

TEST_F(Stories, Int8InfoAndSkipModules) {
  auto m = Model::load(kStories, opts(Precision::Int8, 2));
  const ModelInfo& in = m->info();
  EXPECT_EQ(in.precision, "int8");
  EXPECT_FLOAT_EQ(in.threshold, 6.0f);
  EXPECT_EQ(in.layers, 5);
  EXPECT_EQ(in.hidden_size, 64);
  EXPECT_EQ(in.heads, 8);
  EXPECT_EQ(in.kv_heads, 4);
  EXPECT_EQ(in.quantized_modules.size(), 35u);  // 5 layers x (q, k, v, o, gate, up, down)
  ASSERT_EQ(in.float_modules.size(), 1u);
  EXPECT_EQ(in.float_modules[0], "lm_head");  // tied to the embedding, never quantized
  EXPECT_EQ(in.checkpoint_bytes, in.parameters * 4u);  // a float32 checkpoint
  EXPECT_EQ(in.weight_bytes_16bit, in.parameters * 2u);
  EXPECT_LT(in.weight_bytes, in.checkpoint_bytes);
  EXPECT_GT(in.peak_rss_bytes, 0u);
  EXPECT_GT(in.largest_tensor_bytes, 0u);

  auto k = Model::load(kStories, opts(Precision::Int8, 2, {"mlp.down_proj"}));
  EXPECT_EQ(k->info().quantized_modules.size(), 30u);
  EXPECT_EQ(k->info().float_modules.size(), 6u);
  for (const auto& n : k->info().float_modules)
    EXPECT_TRUE(n == "lm_head" || n.find("mlp.down_proj") != std::string::npos) << n;
  EXPECT_TRUE(model::module_matches("model.layers.3.mlp.down_proj", "mlp.down_proj"));
  EXPECT_TRUE(model::module_matches("lm_head", "lm_head"));
  EXPECT_FALSE(model::module_matches("model.layers.3.mlp.down_proj", "p.down_proj"));
  EXPECT_FALSE(model::module_matches("model.layers.13.mlp.up_proj", "3.mlp"));
}

TEST_F(Stories, SixteenBitPrecisionsStayCloseToFp32) {
  auto f32 = Model::load(kStories, opts(Precision::F32, 2));
  std::vector<float> ref;
  const auto ids = ref_["greedy_from_bos_first_ids"].get<std::vector<int32_t>>();
  f32->new_session()->forward(ids, &ref, true);
  float amax = 0;
  for (float v : ref) amax = std::max(amax, std::fabs(v));
  // Tolerances relative to the largest logit: fp16 keeps 11 significant bits, bf16 8.
  for (auto [p, tol] : {std::pair{Precision::F16, 2e-3}, std::pair{Precision::BF16, 2e-2},
                        std::pair{Precision::Int8, 3e-2}}) {
    auto m = Model::load(kStories, opts(p, 2));
    std::vector<float> lg;
    m->new_session()->forward(ids, &lg, true);
    ASSERT_EQ(lg.size(), ref.size());
    double worst = 0;
    for (size_t i = 0; i < lg.size(); ++i) worst = std::max(worst, double(std::fabs(lg[i] - ref[i])));
    std::printf("stories260K %s: max |logit - fp32| = %.3g (largest logit %.3g)\n",
                std::string(precision_name(p)).c_str(), worst, amax);
    EXPECT_LT(worst, tol * amax) << precision_name(p);
  }
}

// A bf16 checkpoint saved from the base model class (names without "model.", as some hub
// repositories ship them): the loader finds the tensors, and holding it in bf16 gives exactly the
// weights that rounding the float32 checkpoint to bf16 gives.
TEST_F(Stories, Bf16CheckpointWithoutBasePrefix) {
  const fs::path dir = fs::path(::testing::TempDir()) / "llmint8_test_model_bf16";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kStories + "/config.json", dir / "config.json");
  {
    auto ck = io::Checkpoint::open(kStories);
    io::SafetensorsWriter w((dir / "model.safetensors").string());
    const auto names = ck->names();
    auto strip = [](const std::string& n) { return n.rfind("model.", 0) == 0 ? n.substr(6) : n; };
    for (const auto& n : names) w.add(strip(n), DType::BF16, ck->get(n).shape);
    for (const auto& n : names) {
      const io::TensorInfo& t = ck->get(n);
      std::vector<float> f(static_cast<size_t>(t.numel()));
      io::Checkpoint::read_f32(t, f.data());
      std::vector<uint16_t> b(f.size());
      for (size_t i = 0; i < f.size(); ++i) b[i] = to_bf16(f[i]).bits;
      w.write(strip(n), b.data());
    }
    w.commit();
  }
  auto a = Model::load(kStories, opts(Precision::BF16, 1));
  auto b = Model::load(dir.string(), opts(Precision::BF16, 1));
  const auto ids = ref_["greedy_from_bos_first_ids"].get<std::vector<int32_t>>();
  std::vector<float> la, lb;
  a->new_session()->forward(ids, &la, true);
  b->new_session()->forward(ids, &lb, true);
  EXPECT_EQ(la, lb);
  EXPECT_EQ(b->info().checkpoint_bytes, b->info().weight_bytes_16bit);
  fs::remove_all(dir);
}

TEST_F(Stories, SessionLimits) {
  auto m = Model::load(kStories, opts(Precision::F32, 1));
  auto s = m->new_session(4);
  std::vector<float> lg;
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(s->forward(five, &lg), Error);
  const std::vector<int32_t> bad = {1, 512};
  EXPECT_THROW(s->forward(bad, &lg), Error);
  EXPECT_THROW(s->forward(std::span<const int32_t>(), &lg), Error);
  EXPECT_THROW(Model::load(kStories, [] { LoadOptions o; o.device = "tpu"; return o; }()), Error);
}

// The CPU model's batch session (Model::new_batch_session's default: one session per sequence)
// gives each sequence exactly what it gives alone, at different positions.
TEST_F(Stories, BatchSessionEqualsSeparateSessions) {
  auto m = Model::load(kStories, opts(Precision::Int8, 1));
  auto batch = m->new_batch_session(3, 16);
  const std::vector<std::vector<int32_t>> prompts = {{1, 400}, {1, 300, 301, 302}, {1}};
  std::vector<float> lg;
  for (int64_t b = 0; b < 3; ++b) batch->forward(b, prompts[size_t(b)], &lg);
  const std::vector<int32_t> toks = {5, 6, 7};
  batch->step(toks, &lg);
  ASSERT_EQ(lg.size(), size_t(3 * m->vocab_size()));
  for (int64_t b = 0; b < 3; ++b) {
    auto s = m->new_session(16);
    std::vector<float> alone;
    s->forward(prompts[size_t(b)], &alone);
    s->forward(std::span<const int32_t>(&toks[size_t(b)], 1), &alone);
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), lg.begin() + b * m->vocab_size())) << "sequence " << b;
    EXPECT_EQ(batch->position(b), int64_t(prompts[size_t(b)].size()) + 1);
  }
  // Refused steps change nothing: a wrong count, an id out of range, a full sequence.
  const std::vector<int32_t> two = {1, 2}, bad = {1, 2, 512};
  EXPECT_THROW(batch->step(two, &lg), Error);
  EXPECT_THROW(batch->step(bad, &lg), Error);
  const std::vector<int32_t> eleven(11, 9);
  batch->forward(1, eleven, &lg);  // sequence 1 now full (16)
  EXPECT_THROW(batch->step(toks, &lg), Error);
  EXPECT_EQ(batch->position(0), 3);
  EXPECT_THROW(batch->forward(3, toks, &lg), Error);
  EXPECT_THROW(m->new_batch_session(0), Error);
}

// ---------------------------------------------------------------------------------------------
// Tiny random checkpoints of each family vs transformers (tests/fixtures, tools/make_fixtures.py)

const std::string kFixtures = std::string(LLMINT8_SOURCE_DIR) + "/tests/fixtures";

class Family : public ::testing::TestWithParam<std::string> {};

TEST_P(Family, MatchesTransformers) {
  const std::string dir = kFixtures + "/" + GetParam();
  if (!fs::exists(dir + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir;
  const test::FixtureRef ref = test::read_fixture_ref(dir);
  ASSERT_EQ(ref.input_ids.size(), 16u);
  ASSERT_EQ(ref.greedy_ids.size(), 8u);
  float amax = 0;
  for (float v : ref.logits) amax = std::max(amax, std::fabs(v));

  // Tolerances relative to the largest reference logit: fp32 1e-4 (float rounding only);
  // int8 (threshold 6): max error 12%, RMS error 2.5% -- 8-bit weights and activations on these
  // sharp random models (N(0, 0.25) weights, attention scores of std ~4) move single logits by
  // up to ~8% (llama), RMS ~1.7%; the greedy continuation must still be exact.
  for (auto [p, tol] : {std::pair{Precision::F32, 1e-4}, std::pair{Precision::Int8, 0.12}}) {
    auto m = Model::load(dir, opts(p, 2));
    EXPECT_EQ(m->info().model_type, GetParam() == "gpt_neox" ? "gpt_neox" : GetParam());
    std::vector<float> lg;
    auto s = m->new_session();
    s->forward(ref.input_ids, &lg, /*all_logits=*/true);
    ASSERT_EQ(lg.size(), ref.logits.size());
    double worst = 0, se = 0;
    for (size_t i = 0; i < lg.size(); ++i) {
      const double d = std::fabs(double(lg[i]) - ref.logits[i]);
      worst = std::max(worst, d);
      se += d * d;
    }
    const double rms = std::sqrt(se / double(lg.size()));
    std::printf("%-9s %s: |logit - transformers| max %.3g rms %.3g (largest logit %.3g)\n",
                GetParam().c_str(), std::string(precision_name(p)).c_str(), worst, rms, amax);
    EXPECT_LE(worst, tol * amax) << precision_name(p);
    if (p == Precision::Int8) {
      EXPECT_LE(rms, 0.025 * amax);
    }

    // Greedy continuation of input_ids[:4] with the KV cache (prefill 4, then decode).
    auto g = m->new_session();
    std::vector<int32_t> prompt(ref.input_ids.begin(), ref.input_ids.begin() + 4), out;
    std::vector<float> l1;
    g->forward(prompt, &l1);
    for (int k = 0; k < 8; ++k) {
      out.push_back(argmax(l1));
      g->forward(std::span<const int32_t>(&out.back(), 1), &l1);
    }
    if (p == Precision::F32) {
      EXPECT_EQ(out, ref.greedy_ids);
    } else {
      // Some greedy steps of these random models have top-2 gaps of only 0.1 (reference.json),
      // within int8's error: the first half of the continuation must match.
      size_t same = 0;
      while (same < out.size() && out[same] == ref.greedy_ids[same]) ++same;
      std::printf("%-9s int8 greedy: %zu of 8 ids match transformers fp32\n", GetParam().c_str(), same);
      EXPECT_GE(same, 4u);
    }
  }
}

// Quantizing llama/ at load gives bitsandbytes' CB/SCB exactly (expected_int8.safetensors, and
// every Linear of llama-int8-hf/, the same weights as bitsandbytes saves a load_in_8bit model);
// loading that 8-bit checkpoint runs the same int8 weights.
TEST(Fixtures, Int8MatchesBitsandbytesAndLoadsItsCheckpoint) {
  const std::string fp = kFixtures + "/llama", q8 = kFixtures + "/llama-int8-hf";
  if (!fs::exists(q8 + "/model.safetensors") || !fs::exists(fp + "/model.safetensors"))
    GTEST_SKIP() << "fixtures absent: " << q8;
  auto a = Model::load(fp, opts(Precision::Int8, 1));
  auto b = Model::load(q8, opts(Precision::Int8, 1));
  EXPECT_EQ(a->info().quantized_modules, b->info().quantized_modules);
  EXPECT_EQ(b->info().quantized_modules.size(), 14u);
  EXPECT_EQ(a->info().parameters, b->info().parameters);

  io::SafetensorsFile exp(q8 + "/expected_int8.safetensors");
  const std::string name = exp.metadata().count("module") ? exp.metadata().at("module")
                                                           : "model.layers.1.self_attn.q_proj";
  const io::TensorInfo* cb = exp.find("CB");
  const io::TensorInfo* scb = exp.find("SCB");
  ASSERT_TRUE(cb && scb);
  const Int8Weight* w = model::find_int8_weight(*a, name);
  ASSERT_NE(w, nullptr) << name;
  ASSERT_EQ(w->out_features * w->in_features, cb->numel());
  EXPECT_EQ(std::memcmp(w->CB, cb->data, cb->nbytes), 0) << name;
  EXPECT_EQ(std::memcmp(w->SCB, scb->data, scb->nbytes), 0) << name;

  io::Checkpoint::open(q8);  // (validates the shards)
  auto ck = io::Checkpoint::open(q8);
  for (const auto& mod : a->info().quantized_modules) {
    const Int8Weight* x = model::find_int8_weight(*a, mod);
    const Int8Weight* y = model::find_int8_weight(*b, mod);
    ASSERT_TRUE(x && y) << mod;
    const io::TensorInfo& t = ck->get(mod + ".weight");
    EXPECT_EQ(std::memcmp(x->CB, t.data, t.nbytes), 0) << mod;
    EXPECT_EQ(std::memcmp(y->CB, t.data, t.nbytes), 0) << mod;
    EXPECT_EQ(std::memcmp(x->SCB, y->SCB, size_t(x->out_features) * 4), 0) << mod;
  }

  // The 8-bit checkpoint's forward: int8 weights, fp16 embeddings/norms.
  const test::FixtureRef ref = test::read_fixture_ref(fp);
  std::vector<float> la, lb;
  a->new_session()->forward(ref.input_ids, &la, true);
  b->new_session()->forward(ref.input_ids, &lb, true);
  double worst = 0;
  for (size_t i = 0; i < la.size(); ++i) worst = std::max(worst, double(std::fabs(la[i] - lb[i])));
  double amax = 0, wb = 0;
  for (size_t i = 0; i < lb.size(); ++i) {
    amax = std::max(amax, double(std::fabs(ref.logits[i])));
    wb = std::max(wb, double(std::fabs(lb[i] - ref.logits[i])));
  }
  std::printf("llama-int8-hf int8: max |logit - transformers fp32| %.3g; vs llama quantized at "
              "load %.3g (same CB/SCB; fp16 embeddings and norms)\n", wb, worst);
  EXPECT_LT(wb, 0.12 * amax);  // the int8 tolerance of the family tests
  // Floating point from the 8-bit checkpoint: the dequantized weights.
  auto c = Model::load(q8, opts(Precision::F32, 1));
  EXPECT_TRUE(c->info().quantized_modules.empty());
  std::vector<float> lc;
  c->new_session()->forward(ref.input_ids, &lc, true);
  double wc = 0;
  for (size_t i = 0; i < lc.size(); ++i) wc = std::max(wc, double(std::fabs(lc[i] - ref.logits[i])));
  std::printf("llama-int8-hf fp32 (dequantized weights, float activations): max |logit - transformers| %.3g\n", wc);
  EXPECT_LT(wc, 0.12 * amax);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Family,
                         ::testing::Values("llama", "qwen2", "opt", "gpt2", "gpt_neox", "bloom"),
                         [](const auto& i) { return i.param; });

// ---------------------------------------------------------------------------------------------
// Config and checkpoint validation on a tiny synthetic Llama

class Synthetic : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::testing::TempDir()) / "llmint8_test_model" / info->name()).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  json config() const {
    return json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 2},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 32},
                {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-5}, {"bos_token_id", 1},
                {"eos_token_id", {2, 3}}, {"tie_word_embeddings", false}};
  }
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors() const {
    std::vector<std::pair<std::string, std::vector<int64_t>>> t = {
        {"model.embed_tokens.weight", {32, 16}}, {"model.norm.weight", {16}}, {"lm_head.weight", {32, 16}}};
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      t.push_back({p + "input_layernorm.weight", {16}});
      t.push_back({p + "post_attention_layernorm.weight", {16}});
      t.push_back({p + "self_attn.q_proj.weight", {16, 16}});
      t.push_back({p + "self_attn.k_proj.weight", {8, 16}});
      t.push_back({p + "self_attn.v_proj.weight", {8, 16}});
      t.push_back({p + "self_attn.o_proj.weight", {16, 16}});
      t.push_back({p + "mlp.gate_proj.weight", {24, 16}});
      t.push_back({p + "mlp.up_proj.weight", {24, 16}});
      t.push_back({p + "mlp.down_proj.weight", {16, 24}});
    }
    return t;
  }
  void write(const json& cfg, const std::vector<std::pair<std::string, std::vector<int64_t>>>& ts) {
    std::ofstream(dir_ + "/config.json") << cfg.dump(2);
    io::SafetensorsWriter w(dir_ + "/model.safetensors");
    for (const auto& [n, s] : ts) w.add(n, DType::F32, s);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 0.3f);
    for (const auto& [n, s] : ts) {
      int64_t k = 1;
      for (int64_t d : s) k *= d;
      std::vector<float> v(static_cast<size_t>(k));
      for (auto& x : v) x = n.find("norm") != std::string::npos ? 1.f + 0.1f * nd(rng) : nd(rng);
      w.write(n, v.data());
    }
    w.commit();
  }
  std::string error_of(const LoadOptions& o = opts(Precision::F32)) {
    try {
      Model::load(dir_, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  std::string dir_;
};

TEST_F(Synthetic, LoadsAndRuns) {
  write(config(), tensors());
  auto m = Model::load(dir_, opts(Precision::F32));
  EXPECT_EQ(m->eos_id(), 2);  // first of the list
  EXPECT_EQ(m->eos_ids(), (std::vector<int32_t>{2, 3}));
  std::ofstream(dir_ + "/generation_config.json") << R"({"eos_token_id": [5, 6, 7]})";
  EXPECT_EQ(Model::load(dir_, opts(Precision::F32))->eos_ids(), (std::vector<int32_t>{5, 6, 7}));
  std::ofstream(dir_ + "/generation_config.json") << R"({"eos_token_id": "x"})";
  EXPECT_NE(error_of().find("generation_config.json: eos_token_id must be"), std::string::npos) << error_of();
  fs::remove(dir_ + "/generation_config.json");
  LoadOptions po = opts(Precision::Int8);
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  po.progress = [&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); };
  auto i8 = Model::load(dir_, po);
  ASSERT_GE(calls.size(), 2u);
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, calls.back().second);
    EXPECT_LE(calls[i].first, calls[i].second);
    if (i) {
      EXPECT_GE(calls[i].first, calls[i - 1].first);
    }
  }
  EXPECT_EQ(calls.back().first, calls.back().second);
  EXPECT_EQ(calls.back().second, i8->info().checkpoint_bytes);
  std::vector<float> a, b;
  const std::vector<int32_t> ids = {1, 5, 9, 30, 7};
  m->new_session()->forward(ids, &a, true);
  i8->new_session()->forward(ids, &b, true);
  ASSERT_EQ(a.size(), 5u * 32u);
  double amax = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(a[i]));
    amax = std::max(amax, double(std::fabs(a[i])));
    worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  }
  EXPECT_GT(worst, 0.0);  // int8 weights really are in use
  EXPECT_LT(worst, 0.05 * amax);
  EXPECT_EQ(i8->info().quantized_modules.size(), 14u);
}

TEST_F(Synthetic, HeadsNotDividingHidden) {
  json c = config();
  c["hidden_size"] = 64;
  c["num_attention_heads"] = 5;
  c["num_key_value_heads"] = 5;
  write(c, tensors());
  EXPECT_NE(error_of().find("config.json: num_attention_heads (5) does not divide hidden_size (64)"),
            std::string::npos)
      << error_of();
}

TEST_F(Synthetic, KvHeadsNotDividingHeads) {
  json c = config();
  c["num_key_value_heads"] = 3;
  write(c, tensors());
  EXPECT_NE(error_of().find("config.json: num_key_value_heads (3) does not divide num_attention_heads (4)"),
            std::string::npos)
      << error_of();
}

TEST_F(Synthetic, NonPositiveSizes) {
  for (const char* key : {"hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"}) {
    json c = config();
    c[key] = 0;
    write(c, tensors());
    const std::string e = error_of();
    EXPECT_NE(e.find("config.json"), std::string::npos) << e;
    EXPECT_NE(e.find("must be positive"), std::string::npos) << e;
  }
}

TEST_F(Synthetic, ImplausibleSizes) {
  json c = config();
  c["vocab_size"] = int64_t(1) << 40;
  write(c, tensors());
  EXPECT_NE(error_of().find("config.json: vocab_size (1099511627776) is implausibly large"), std::string::npos)
      << error_of();
  c = config();
  c["head_dim"] = int64_t(1) << 62;
  write(c, tensors());
  EXPECT_NE(error_of().find("num_attention_heads * head_dim"), std::string::npos) << error_of();
}

TEST_F(Synthetic, UnknownArchitecture) {
  json c = config();
  c["architectures"] = {"FooForCausalLM"};
  c["model_type"] = "foo";
  write(c, tensors());
  const std::string e = error_of();
  EXPECT_NE(e.find(dir_ + "/config.json: unsupported architecture 'FooForCausalLM' (supported: "),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("GPT2LMHeadModel"), std::string::npos) << e;
}

TEST_F(Synthetic, MissingTensor) {
  auto ts = tensors();
  ts.erase(std::remove_if(ts.begin(), ts.end(),
                          [](const auto& t) { return t.first == "model.layers.1.mlp.up_proj.weight"; }),
           ts.end());
  write(config(), ts);
  const std::string e = error_of(opts(Precision::Int8));
  EXPECT_NE(e.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find(dir_), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
}

TEST_F(Synthetic, WrongShape) {
  auto ts = tensors();
  for (auto& t : ts)
    if (t.first == "model.layers.0.self_attn.k_proj.weight") t.second = {16, 16};
  write(config(), ts);
  const std::string e = error_of();
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.0.self_attn.k_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[16, 16]"), std::string::npos) << e;
  EXPECT_NE(e.find("[8, 16]"), std::string::npos) << e;
}

TEST_F(Synthetic, MissingConfigAndBadJson) {
  EXPECT_NE(error_of().find(dir_ + "/config.json"), std::string::npos);
  std::ofstream(dir_ + "/config.json") << "{ not json";
  EXPECT_NE(error_of().find("config.json: invalid JSON"), std::string::npos) << error_of();
}

// Mistral's sliding window: key j is visible to query i when i - window < j <= i, in the prefill
// (sgemm) path and the decode path alike.
TEST_F(Synthetic, MistralSlidingWindow) {
  json c = config();
  c["architectures"] = {"MistralForCausalLM"};
  c["model_type"] = "mistral";
  c["sliding_window"] = nullptr;
  write(c, tensors());
  auto full = Model::load(dir_, opts(Precision::F32, 1));
  c["sliding_window"] = 3;
  std::ofstream(dir_ + "/config.json") << c.dump(2);
  auto win = Model::load(dir_, opts(Precision::F32, 1));
  std::vector<int32_t> ids;
  for (int i = 0; i < 12; ++i) ids.push_back((i * 7 + 3) % 32);
  std::vector<float> a, b;
  full->new_session()->forward(ids, &a, true);
  win->new_session()->forward(ids, &b, true);
  for (size_t t = 0; t < ids.size(); ++t) {
    double d = 0;
    for (size_t v = 0; v < 32; ++v) d = std::max(d, double(std::fabs(a[t * 32 + v] - b[t * 32 + v])));
    if (t < 3) {
      EXPECT_LT(d, 1e-5) << "position " << t << " sees at most 3 keys either way";
    } else {
      EXPECT_GT(d, 1e-4) << "position " << t << " must lose its oldest keys";
    }
  }
  // Token-by-token decode agrees with the prefill under the window.
  auto s = win->new_session();
  std::vector<float> lg;
  for (size_t t = 0; t < ids.size(); ++t) {
    s->forward(std::span<const int32_t>(&ids[t], 1), &lg);
    for (size_t v = 0; v < 32; ++v) ASSERT_NEAR(lg[v], b[t * 32 + v], 1e-4) << "position " << t;
  }
}

uint64_t current_rss() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// Loading converts one tensor at a time and drops its mapped pages: the peak stays near the
// final int8 model plus the largest tensor, far below the 16-bit checkpoint.
TEST_F(Synthetic, LoadingNeverHoldsTheWholeCheckpoint) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan keeps freed memory in quarantine (and adds redzones): resident memory says nothing.
  GTEST_SKIP() << "peak RSS bounds are meaningless under AddressSanitizer";
#endif
  const int64_t H = 512, I = 1536, L = 12, V = 1024;
  json c = config();
  c["hidden_size"] = H;
  c["intermediate_size"] = I;
  c["num_hidden_layers"] = L;
  c["num_attention_heads"] = 8;
  c["num_key_value_heads"] = 8;
  c["vocab_size"] = V;
  std::ofstream(dir_ + "/config.json") << c.dump(2);
  std::vector<std::pair<std::string, std::vector<int64_t>>> ts = {
      {"model.embed_tokens.weight", {V, H}}, {"model.norm.weight", {H}}, {"lm_head.weight", {V, H}}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) ts.push_back({p + n + ".weight", {H}});
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      ts.push_back({p + "self_attn." + n + ".weight", {H, H}});
    ts.push_back({p + "mlp.gate_proj.weight", {I, H}});
    ts.push_back({p + "mlp.up_proj.weight", {I, H}});
    ts.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  {
    io::SafetensorsWriter w(dir_ + "/model.safetensors");
    for (const auto& [n, s] : ts) w.add(n, DType::F16, s);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> ud(-0.05f, 0.05f);
    for (const auto& [n, s] : ts) {
      int64_t k = 1;
      for (int64_t d : s) k *= d;
      std::vector<uint16_t> v(static_cast<size_t>(k));
      for (auto& x : v) x = to_f16(n.find("norm") != std::string::npos ? 1.f : ud(rng)).bits;
      w.write(n, v.data());
    }
    w.commit();
  }
  const uint64_t before = current_rss();
  auto m = Model::load(dir_, opts(Precision::Int8, 2));
  const ModelInfo& in = m->info();
  const uint64_t grew = in.peak_rss_bytes > before ? in.peak_rss_bytes - before : 0;
  std::printf("synthetic %lld-param fp16 checkpoint %.1f MB -> int8 model %.1f MB; largest tensor "
              "%.1f MB; peak RSS %.1f MB (+%.1f MB over the %.1f MB before loading)\n",
              (long long)in.parameters, in.checkpoint_bytes / 1e6, in.weight_bytes / 1e6,
              in.largest_tensor_bytes / 1e6, in.peak_rss_bytes / 1e6, grew / 1e6, before / 1e6);
  EXPECT_EQ(in.checkpoint_bytes, in.weight_bytes_16bit);
  EXPECT_LT(in.weight_bytes, in.checkpoint_bytes * 6 / 10);
  // The float32 conversion buffer of the largest tensor (2x its 16-bit bytes) plus 8 MB slack.
  EXPECT_LT(grew, in.weight_bytes + 2 * in.largest_tensor_bytes + (8u << 20));
  std::vector<float> lg;
  const std::vector<int32_t> ids = {1, 2, 3};
  m->new_session()->forward(ids, &lg);
  for (float v : lg) ASSERT_TRUE(std::isfinite(v));
}

TEST(Config, FamilySpellings) {
  // GPT-2 names, BLOOM names, OPT's word_embed_proj_dim rejection, NeoX rotary_pct.
  auto gpt2 = model::parse_config(json{{"model_type", "gpt2"}, {"n_embd", 32}, {"n_layer", 2},
                                       {"n_head", 4}, {"n_positions", 64}, {"vocab_size", 50},
                                       {"layer_norm_epsilon", 1e-5}, {"eos_token_id", 7}},
                                  "d", "d/config.json");
  EXPECT_EQ(gpt2.hidden_size, 32);
  EXPECT_EQ(gpt2.intermediate_size, 128);
  EXPECT_EQ(gpt2.activation, "gelu_tanh");
  EXPECT_TRUE(gpt2.tie_word_embeddings);
  EXPECT_EQ(gpt2.eos_ids, std::vector<int32_t>{7});
  auto bloom = model::parse_config(json{{"model_type", "bloom"}, {"n_embed", 32}, {"n_layer", 2},
                                        {"n_head", 4}, {"vocab_size", 50}},
                                   "d", "d/config.json");
  EXPECT_EQ(bloom.hidden_size, 32);
  EXPECT_EQ(bloom.num_heads, 4);
  auto neox = model::parse_config(json{{"model_type", "gpt_neox"}, {"hidden_size", 32},
                                       {"num_hidden_layers", 2}, {"num_attention_heads", 2},
                                       {"max_position_embeddings", 64}, {"vocab_size", 50},
                                       {"rotary_pct", 0.25}},
                                  "d", "d/config.json");
  EXPECT_EQ(neox.rotary_dim(), 4);
  EXPECT_TRUE(neox.parallel_residual);
  try {
    model::parse_config(json{{"model_type", "opt"}, {"hidden_size", 32}, {"num_hidden_layers", 2},
                             {"num_attention_heads", 2}, {"ffn_dim", 64}, {"vocab_size", 50},
                             {"max_position_embeddings", 64}, {"word_embed_proj_dim", 16}},
                        "d", "d/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d/config.json: word_embed_proj_dim (16) != hidden_size (32)"),
              std::string::npos)
        << e.what();
  }
  auto llama3 = model::parse_config(
      json{{"model_type", "llama"}, {"hidden_size", 64}, {"num_hidden_layers", 1},
           {"num_attention_heads", 1}, {"intermediate_size", 8}, {"vocab_size", 8},
           {"max_position_embeddings", 64}, {"rope_theta", 500000.0},
           {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}},
      "d", "d/config.json");
  const auto inv = model::rope_inv_freq(llama3);
  ASSERT_EQ(inv.size(), 32u);
  EXPECT_FLOAT_EQ(inv[0], 1.0f);                                   // short wavelength: kept
  const float raw_last = 1.0f / std::pow(500000.0f, 62.0f / 64.0f);  // long wavelength: / factor
  EXPECT_NEAR(inv[31], raw_last / 8.0f, 1e-6f * raw_last);
}

TEST(Config, AlibiSlopes) {
  // 8 heads: 2^-1 .. 2^-8; 12 heads: 8 of base 2^-1, then 4 odd powers of 2^-0.5.
  auto s8 = model::alibi_slopes(8);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(s8[size_t(i)], std::ldexp(1.0f, -(i + 1)));
  auto s12 = model::alibi_slopes(12);
  ASSERT_EQ(s12.size(), 12u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(s12[size_t(8 + i)], std::pow(2.0, -0.5 * (2 * i + 1)), 1e-7);
}

}  // namespace

// The whole model on the GPU (LoadOptions.device = "cuda") against the CPU model and Hugging Face
// transformers' logits, on the tiny random checkpoints of every family (tests/fixtures/<family>/,
// which travel with the repository -- the shared folder does not reach the GPU machine).
//
// Tolerances (relative L2 error over all logits, ||gpu - ref|| / ||ref||), and why:
//  * fp16 vs the CPU fp16 model (same fp16 weights, float32 activations on the CPU): <= 1e-2.
//    The GPU rounds activations between Linears and the KV cache to fp16 (2^-11 relative each),
//    ~10 such roundings per layer; measured ~1e-3 on the fixtures.
//  * bf16 vs the CPU bf16 model: <= 4e-2 (bf16 keeps 8 bits: 2^-8 per rounding).
//  * int8 vs the CPU int8 model: <= 5e-2 (measured 1.2e-2 .. 3.2e-2). Same int8 weights
//    (bit-identical quantization); the GPU quantizes fp16-rounded activations, so some int8
//    activation values differ by one step, and these sharp random models (attention scores of std
//    ~4) amplify that; each engine is ~5e-2 from transformers' fp32 logits (test_model's bound).
//  * fp16 vs transformers' float32 logits: <= 1e-2.
// Greedy decoding (prefill 4 tokens, then one-token steps through the CUDA-graph path) must give
// the same 8 ids as transformers (fp16), and the CPU int8 model's ids wherever its decision is
// clear (int8: top1 - top2 >= 0.25; two int8 engines may flip closer calls).
// Skips when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include "fixture_ref.h"
#include "temp_dir.h"
#include "cuda/cuda_model.h"
#include "io/safetensors.h"
#include "llmint8/backend.h"
#include "llmint8/error.h"
#include "llmint8/model.h"

namespace fs = std::filesystem;
using namespace llmint8;

namespace {

const std::string kFixtures = std::string(LLMINT8_SOURCE_DIR) + "/tests/fixtures";

bool have_gpu() {
  static const bool ok = [] {
    try {
      return make_cuda_backend(0) != nullptr;
    } catch (const Error&) {
      return false;
    }
  }();
  return ok;
}

#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU (or built without CUDA)"

LoadOptions opts(Precision p, const std::string& device) {
  LoadOptions o;
  o.precision = p;
  o.device = device;
  o.threads = 2;
  return o;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(a.size(), ref.size()); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<float> all_logits(Model& m, const std::vector<int32_t>& ids) {
  auto s = m.new_session();
  std::vector<float> l;
  s->forward(ids, &l, true);
  EXPECT_EQ(s->position(), int64_t(ids.size()));
  return l;
}

// Prefill `prompt`, then n greedy one-token steps; returns the n new ids.
std::vector<int32_t> greedy(Model& m, const std::vector<int32_t>& prompt, int n) {
  auto s = m.new_session();
  std::vector<float> l;
  s->forward(prompt, &l);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const int32_t t = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(t);
    if (i + 1 < n) s->forward(std::span<const int32_t>(&t, 1), &l);
  }
  return out;
}

class CudaFamily : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return kFixtures + "/" + GetParam(); }
};

TEST_P(CudaFamily, Fp16MatchesCpuAndTransformers) {
  REQUIRE_GPU();
  if (!fs::exists(dir() + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir();
  const test::FixtureRef ref = test::read_fixture_ref(dir());
  ASSERT_EQ(ref.input_ids.size(), 16u);
  auto gpu = Model::load(dir(), opts(Precision::F16, "cuda"));
  auto cpu = Model::load(dir(), opts(Precision::F16, "cpu"));
  EXPECT_EQ(gpu->info().precision, "fp16");
  EXPECT_GT(gpu->info().weight_bytes, 0u);
  const std::vector<float> g = all_logits(*gpu, ref.input_ids);
  const std::vector<float> c = all_logits(*cpu, ref.input_ids);
  const double e_cpu = rel_err(g, c), e_hf = rel_err(g, ref.logits);
  std::printf("[%s] fp16 gpu vs cpu fp16: %.2e, vs transformers fp32: %.2e\n", GetParam().c_str(), e_cpu, e_hf);
  EXPECT_LE(e_cpu, 1e-2);
  EXPECT_LE(e_hf, 1e-2);
  // Greedy: prefill 4, then 7 single-token steps (CUDA graph replays).
  const std::vector<int32_t> prompt(ref.input_ids.begin(), ref.input_ids.begin() + 4);
  EXPECT_EQ(greedy(*gpu, prompt, 8), ref.greedy_ids);
}

TEST_P(CudaFamily, Int8MatchesCpuInt8) {
  REQUIRE_GPU();
  if (!fs::exists(dir() + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir();
  const test::FixtureRef ref = test::read_fixture_ref(dir());
  auto gpu = Model::load(dir(), opts(Precision::Int8, "cuda"));
  auto cpu = Model::load(dir(), opts(Precision::Int8, "cpu"));
  EXPECT_EQ(gpu->info().precision, "int8");
  EXPECT_EQ(gpu->info().quantized_modules, cpu->info().quantized_modules);
  const std::vector<float> g = all_logits(*gpu, ref.input_ids);
  const std::vector<float> c = all_logits(*cpu, ref.input_ids);
  const double e = rel_err(g, c);
  std::printf("[%s] int8 gpu vs cpu int8: %.2e, vs transformers fp32: %.2e\n", GetParam().c_str(), e,
              rel_err(g, ref.logits));
  EXPECT_LE(e, 5e-2);
  // Greedy, teacher-forced on the CPU int8 model's ids: the GPU's argmax must agree at every step
  // whose CPU top1 - top2 gap is >= 0.25 (4x the int8 models' RMS logit difference, ~0.06 here);
  // closer calls may flip between two int8 engines and are not compared.
  const std::vector<int32_t> prompt(ref.input_ids.begin(), ref.input_ids.begin() + 4);
  auto sc = cpu->new_session(), sg = gpu->new_session();
  std::vector<float> lc, lg;
  sc->forward(prompt, &lc);
  sg->forward(prompt, &lg);
  int checked = 0;
  for (int i = 0; i < 8; ++i) {
    std::vector<float> sorted = lc;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    const int32_t tc = int32_t(std::max_element(lc.begin(), lc.end()) - lc.begin());
    const int32_t tg = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    if (sorted[0] - sorted[1] >= 0.25f) {
      EXPECT_EQ(tg, tc) << "step " << i << ", cpu gap " << sorted[0] - sorted[1];
      ++checked;
    }
    sc->forward(std::span<const int32_t>(&tc, 1), &lc);
    sg->forward(std::span<const int32_t>(&tc, 1), &lg);
  }
  EXPECT_GE(checked, 4) << "too few clear greedy decisions to compare";
  // The last decode step (a CUDA-graph replay) follows the CPU int8 logits: one row, so a looser
  // bound than the 16-row figure (measured 4.8e-2 on llama).
  EXPECT_LE(rel_err(lg, lc), 8e-2);
}

TEST_P(CudaFamily, Bf16MatchesCpuBf16) {
  REQUIRE_GPU();
  if (!fs::exists(dir() + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir();
  const test::FixtureRef ref = test::read_fixture_ref(dir());
  auto gpu = Model::load(dir(), opts(Precision::BF16, "cuda"));
  auto cpu = Model::load(dir(), opts(Precision::BF16, "cpu"));
  const double e = rel_err(all_logits(*gpu, ref.input_ids), all_logits(*cpu, ref.input_ids));
  std::printf("[%s] bf16 gpu vs cpu bf16: %.2e\n", GetParam().c_str(), e);
  EXPECT_LE(e, 4e-2);
}

// The KV cache and the split (flash-decoding) attention path: the same 16 tokens fed in pieces
// give the logits of one 16-token forward.
TEST_P(CudaFamily, PiecewiseForwardEqualsOneForward) {
  REQUIRE_GPU();
  if (!fs::exists(dir() + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir();
  const test::FixtureRef ref = test::read_fixture_ref(dir());
  auto gpu = Model::load(dir(), opts(Precision::F16, "cuda"));
  const std::vector<float> whole = all_logits(*gpu, ref.input_ids);
  auto s = gpu->new_session();
  std::vector<float> pieces, l;
  size_t at = 0;
  for (size_t n : {5u, 1u, 1u, 9u}) {
    s->forward(std::span<const int32_t>(ref.input_ids.data() + at, n), &l, true);
    pieces.insert(pieces.end(), l.begin(), l.end());
    at += n;
  }
  EXPECT_EQ(s->position(), 16);
  EXPECT_LE(rel_err(pieces, whole), 5e-3);
  // reset() starts over.
  s->reset();
  s->forward(ref.input_ids, &l, true);
  EXPECT_LE(rel_err(l, whole), 1e-6);
}

// Batched decoding: B sequences at different positions (prompts of different lengths), stepped
// together, give each sequence's logits of running it alone. B = 5 takes the int8 decode GEMV
// (M <= 16) and one attention block per sequence; B = 20 the GEMM path. fp16 and int8 without
// the decomposition (threshold 0: every row quantized on its own, exact int32, bit-identical
// epilogue) must agree up to cuBLAS picking other fp16 kernels for another M (lm_head): 1e-3.
// With threshold 6 the batch legitimately differs: LLM.int8() takes a column out of the int8
// product when ANY row of X reaches the threshold, so a sequence's outlier columns are the union
// over the batch (as in bitsandbytes); bounded like int8 against the CPU model (5e-2).
TEST_P(CudaFamily, BatchedStepsEqualSeparateSessions) {
  REQUIRE_GPU();
  if (!fs::exists(dir() + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir();
  const test::FixtureRef ref = test::read_fixture_ref(dir());
  struct Case { Precision p; float threshold; double tol; };
  for (const Case& cs : {Case{Precision::F16, 6.f, 1e-3}, Case{Precision::Int8, 0.f, 1e-3},
                         Case{Precision::Int8, 6.f, 5e-2}}) {
    const Precision p = cs.p;
    LoadOptions o = opts(p, "cuda");
    o.threshold = cs.threshold;
    auto gpu = Model::load(dir(), o);
    const int64_t V = gpu->vocab_size();
    for (int64_t B : {int64_t(5), int64_t(20)}) {
      auto batch = gpu->new_batch_session(B, 32);
      ASSERT_EQ(batch->batch_size(), B);
      std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B));
      std::vector<float> l;
      for (int64_t b = 0; b < B; ++b) {
        const size_t n = 1 + size_t(b * 7 % 11);  // 1..11 tokens
        for (size_t i = 0; i < n; ++i) prompts[size_t(b)].push_back(ref.input_ids[(size_t(b) + i) % ref.input_ids.size()]);
        batch->forward(b, prompts[size_t(b)], &l);
        EXPECT_EQ(batch->position(b), int64_t(n));
      }
      // Three steps of the batch; the same tokens one sequence at a time.
      std::vector<std::vector<float>> stepped(static_cast<size_t>(B));
      for (int step = 0; step < 3; ++step) {
        std::vector<int32_t> toks(static_cast<size_t>(B));
        for (int64_t b = 0; b < B; ++b) toks[size_t(b)] = int32_t((b * 13 + step * 5 + 1) % V);
        batch->step(toks, &l);
        ASSERT_EQ(l.size(), size_t(B * V));
        for (int64_t b = 0; b < B; ++b) {
          prompts[size_t(b)].push_back(toks[size_t(b)]);
          stepped[size_t(b)].insert(stepped[size_t(b)].end(), l.begin() + b * V, l.begin() + (b + 1) * V);
        }
      }
      double worst = 0;
      for (int64_t b = 0; b < B; ++b) {
        auto s = gpu->new_session(32);
        const auto& ids = prompts[size_t(b)];
        s->forward(std::span<const int32_t>(ids.data(), ids.size() - 3), &l);
        std::vector<float> alone;
        for (size_t i = ids.size() - 3; i < ids.size(); ++i) {
          s->forward(std::span<const int32_t>(&ids[i], 1), &l);
          alone.insert(alone.end(), l.begin(), l.end());
        }
        worst = std::max(worst, rel_err(stepped[size_t(b)], alone));
        EXPECT_EQ(batch->position(b), int64_t(ids.size()));
      }
      std::printf("[%s] %s (threshold %g) batch %lld: worst rel err vs separate sessions %.2e\n",
                  GetParam().c_str(), std::string(precision_name(p)).c_str(), double(cs.threshold), (long long)B,
                  worst);
      EXPECT_LE(worst, cs.tol) << precision_name(p) << " threshold " << cs.threshold << " batch " << B;
      // reset() and a wrong number of tokens.
      const std::vector<int32_t> two = {1, 2};
      EXPECT_THROW(batch->step(two, &l), Error);
      EXPECT_THROW(batch->forward(B, two, &l), Error);
      batch->reset();
      for (int64_t b = 0; b < B; ++b) EXPECT_EQ(batch->position(b), 0);
    }
  }
}

// A batch step that would overflow one sequence's capacity fails and changes nothing.
TEST(CudaModel, BatchedStepCapacity) {
  REQUIRE_GPU();
  const std::string dir = kFixtures + "/llama";
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << "fixture absent: " << dir;
  auto m = Model::load(dir, opts(Precision::Int8, "cuda"));
  auto batch = m->new_batch_session(3, 4);
  std::vector<float> l;
  const std::vector<int32_t> four = {1, 2, 3, 4}, three = {5, 6, 7};
  batch->forward(1, four, &l);
  EXPECT_THROW(batch->step(three, &l), Error);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(batch->position(b), b == 1 ? 4 : 0);
  EXPECT_THROW(m->new_batch_session(0), Error);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFamily,
                         ::testing::Values("llama", "qwen2", "gpt2", "opt", "gpt_neox", "bloom"));

// A prompt longer than one 32-key attention tile and one 16-row block (the tiled online softmax
// over several tiles), against the CPU model.
TEST(CudaModel, LongPromptMatchesCpu) {
  REQUIRE_GPU();
  const std::string dir = kFixtures + "/llama";
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << "fixture absent: " << dir;
  auto gpu = Model::load(dir, opts(Precision::F16, "cuda"));
  auto cpu = Model::load(dir, opts(Precision::F16, "cpu"));
  std::mt19937 rng(7);
  std::vector<int32_t> ids(60);
  for (auto& t : ids) t = int32_t(rng() % uint32_t(gpu->vocab_size()));
  const double e = rel_err(all_logits(*gpu, ids), all_logits(*cpu, ids));
  std::printf("[llama] 60-token prompt fp16 gpu vs cpu: %.2e\n", e);
  EXPECT_LE(e, 1e-2);
  for (auto [p, tol] : {std::pair{Precision::BF16, 4e-2}, std::pair{Precision::Int8, 5e-2}}) {
    auto g = Model::load(dir, opts(p, "cuda"));
    auto c = Model::load(dir, opts(p, "cpu"));
    const double ep = rel_err(all_logits(*g, ids), all_logits(*c, ids));
    std::printf("[llama] 60-token prompt %s gpu vs cpu: %.2e\n", std::string(precision_name(p)).c_str(), ep);
    EXPECT_LE(ep, tol) << precision_name(p);
  }
}

// llm_int8_skip_modules naming one part of a fused projection (q_proj of q/k/v, up_proj of
// gate/up): that part stays 16-bit, the others int8, on the GPU as on the CPU.
TEST(CudaModel, SkippedPartOfFusedProjection) {
  REQUIRE_GPU();
  const std::string dir = kFixtures + "/llama";
  if (!fs::exists(dir + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir;
  const test::FixtureRef ref = test::read_fixture_ref(dir);
  LoadOptions o = opts(Precision::Int8, "cuda");
  o.skip_modules = {"q_proj", "mlp.up_proj"};
  auto gpu = Model::load(dir, o);
  o.device = "cpu";
  auto cpu = Model::load(dir, o);
  const auto& fm = gpu->info().float_modules;
  EXPECT_TRUE(std::any_of(fm.begin(), fm.end(), [](const std::string& n) { return n.find("q_proj") != std::string::npos; }));
  const double e = rel_err(all_logits(*gpu, ref.input_ids), all_logits(*cpu, ref.input_ids));
  std::printf("[llama] int8 with q_proj, up_proj skipped: gpu vs cpu %.2e\n", e);
  EXPECT_LE(e, 5e-2);
  // Decode steps (the CUDA graph path) agree with one forward.
  auto s = gpu->new_session();
  std::vector<float> l, steps;
  for (size_t i = 0; i < ref.input_ids.size(); ++i) {
    s->forward(std::span<const int32_t>(&ref.input_ids[i], 1), &l);
    steps.insert(steps.end(), l.begin(), l.end());
  }
  const std::vector<float> whole = all_logits(*gpu, ref.input_ids);
  EXPECT_LE(rel_err(steps, whole), 5e-2);
}

// decode_attention_kernel (one query per sequence) over a long cache: its key splits forced to 1
// (the four warps loop over 32-key chunks, no partials) and to 3 (several chunks per warp, the
// ticket merge), and the default; without and with Mistral's sliding window (37 keys, across
// split boundaries). Every decode step follows the CPU model (fp16: 1e-2, as for the fixtures)
// and the tiled attention_kernel + combine path it replaces (2e-3).
TEST(CudaModel, DecodeAttentionLongCacheAndWindow) {
  REQUIRE_GPU();
  const std::string src = kFixtures + "/llama";
  if (!fs::exists(src + "/config.json")) GTEST_SKIP() << "fixture absent: " << src;
  for (int window : {0, 37}) {
    test::TempDir tmp;
    nlohmann::json c = nlohmann::json::parse(test::read_file(src + "/config.json"));
    c["max_position_embeddings"] = 1024;
    if (window > 0) {
      c["architectures"] = {"MistralForCausalLM"};
      c["model_type"] = "mistral";
      c["sliding_window"] = window;
    }
    tmp.write("config.json", c.dump(2));
    fs::create_symlink(fs::absolute(src + "/model.safetensors"), tmp.path("model.safetensors"));
    auto cpu = Model::load(tmp.str(), opts(Precision::F16, "cpu"));
    std::mt19937 rng(11);
    std::vector<int32_t> ids(560);
    for (auto& t : ids) t = int32_t(rng() % uint32_t(cpu->vocab_size()));
    const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 540);
    auto steps = [&](Model& m) {  // the logits of the 20 one-token steps after the prompt
      auto s = m.new_session(600);
      std::vector<float> l, all;
      s->forward(prompt, &l);
      for (size_t i = prompt.size(); i < ids.size(); ++i) {
        s->forward(std::span<const int32_t>(&ids[i], 1), &l);
        all.insert(all.end(), l.begin(), l.end());
      }
      return all;
    };
    auto gpu_with = [&](const char* var, const char* value) {
      setenv(var, value, 1);
      auto m = Model::load(tmp.str(), opts(Precision::F16, "cuda"));
      unsetenv(var);
      return m;
    };
    const std::vector<float> ref = steps(*cpu);
    const std::vector<float> tiled = steps(*gpu_with("LLMINT8_CUDA_DECODE_ATTENTION", "0"));
    EXPECT_LE(rel_err(tiled, ref), 1e-2) << "window " << window;
    for (const char* splits : {"1", "3", "0"}) {
      const std::vector<float> got = steps(*gpu_with("LLMINT8_CUDA_DEC_ATTN_SPLITS", splits));
      const double e_cpu = rel_err(got, ref), e_tiled = rel_err(got, tiled);
      std::printf("[llama] decode attention, window %d, splits %s: vs cpu %.2e, vs tiled kernel %.2e\n", window,
                  splits, e_cpu, e_tiled);
      EXPECT_LE(e_cpu, 1e-2) << "window " << window << ", splits " << splits;
      EXPECT_LE(e_tiled, 2e-3) << "window " << window << ", splits " << splits;
    }
  }
}

// The input embedding table of an untied model stays in pinned host memory by default (read over
// PCIe, only the tokens' rows); LoadOptions::gpu_embeddings keeps it on the GPU, as does a tied
// lm_head. Same logits, bit for bit, for a prompt and for decode steps (graph replays); the bytes
// are accounted apart.
TEST(CudaModel, HostEmbeddingsEqualGpuEmbeddings) {
  REQUIRE_GPU();
  {  // tied (lm_head reads the table): on the GPU whatever the option
    const std::string tied = kFixtures + "/llama";
    if (fs::exists(tied + "/config.json"))
      EXPECT_EQ(Model::load(tied, opts(Precision::F16, "cuda"))->info().host_weight_bytes, 0u);
  }
  const std::string dir = kFixtures + "/qwen2";  // untied
  if (!fs::exists(dir + "/reference.safetensors")) GTEST_SKIP() << "fixture absent: " << dir;
  const test::FixtureRef ref = test::read_fixture_ref(dir);
  for (Precision p : {Precision::F16, Precision::Int8}) {
    auto host = Model::load(dir, opts(p, "cuda"));
    LoadOptions o = opts(p, "cuda");
    o.gpu_embeddings = true;
    auto gpu = Model::load(dir, o);
    const ModelInfo &ih = host->info(), &ig = gpu->info();
    const uint64_t table = uint64_t(ih.vocab_size) * uint64_t(ih.hidden_size) * 2;
    EXPECT_EQ(ih.host_weight_bytes, table);
    EXPECT_EQ(ig.host_weight_bytes, 0u);
    EXPECT_EQ(ih.weight_bytes, ig.weight_bytes);
    EXPECT_EQ(all_logits(*host, ref.input_ids), all_logits(*gpu, ref.input_ids)) << precision_name(p);
    auto sh = host->new_session(), sg = gpu->new_session();
    std::vector<float> lh, lg;
    for (int32_t t : ref.input_ids) {
      sh->forward(std::span<const int32_t>(&t, 1), &lh);
      sg->forward(std::span<const int32_t>(&t, 1), &lg);
      ASSERT_EQ(lh, lg) << precision_name(p) << ", decode step";
    }
  }
}

// decode_attention_kernel at real head sizes (128 and 64; DPL 4 and 2) with grouped queries
// (group 4 and 8), on synthetic Llama-shaped models: decode steps at a 300-token cache give the
// logits of the tiled kernel (LLMINT8_CUDA_DECODE_ATTENTION=0), splits forced to 1 and 5 and the
// default. (The fixtures' heads are 16 wide.)
TEST(CudaModel, DecodeAttentionHeadDim128) {
  REQUIRE_GPU();
  struct Shape { int64_t hidden, heads, kv_heads, head_dim; };
  for (const Shape& sh : {Shape{512, 4, 1, 128}, Shape{512, 8, 1, 64}, Shape{1024, 8, 2, 128}}) {
    cuda::LlamaShape ls;
    ls.hidden = sh.hidden;
    ls.layers = 2;
    ls.heads = sh.heads;
    ls.kv_heads = sh.kv_heads;
    ls.head_dim = sh.head_dim;
    ls.intermediate = 2 * sh.hidden;
    ls.vocab = 512;
    ls.max_positions = 1024;
    auto steps = [&](const char* var, const char* value) {
      setenv(var, value, 1);
      auto m = cuda::make_synthetic_cuda_model(ls, opts(Precision::F16, "cuda"), 7, 0.05f);
      unsetenv(var);
      std::vector<int32_t> prompt(300);
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(i * 37 % 512);
      auto s = m->new_session(400);
      std::vector<float> l, all;
      s->forward(prompt, &l);
      for (int i = 0; i < 12; ++i) {
        const int32_t t = int32_t(i * 101 % 512);
        s->forward(std::span<const int32_t>(&t, 1), &l);
        all.insert(all.end(), l.begin(), l.end());
      }
      return all;
    };
    const std::vector<float> tiled = steps("LLMINT8_CUDA_DECODE_ATTENTION", "0");
    ASSERT_FALSE(tiled.empty());
    for (const char* splits : {"1", "5", "0"}) {
      const std::vector<float> got = steps("LLMINT8_CUDA_DEC_ATTN_SPLITS", splits);
      const double e = rel_err(got, tiled);
      std::printf("[synthetic D=%lld, group %lld] decode attention, splits %s: vs tiled kernel %.2e\n",
                  (long long)sh.head_dim, (long long)(sh.heads / sh.kv_heads), splits, e);
      EXPECT_LE(e, 2e-3) << "D " << sh.head_dim << ", splits " << splits;
    }
  }
}

// The gated activation fused into the decode steps' int8 row GEMV (cuda::int8_linear_gated, taken
// for these shapes: K = hidden = 64, M = 1, and M = 4 with LLMINT8_CUDA_DECODE_ROWS=8) gives the
// logits of the separate gate_up GEMV + act_kernel (LLMINT8_CUDA_FUSED_ACT=0) bit for bit:
// single-sequence steps (graph replays) and batched steps of 4 sequences, both gated fixtures.
TEST(CudaModel, FusedGatedActivationEqualsSeparate) {
  REQUIRE_GPU();
  int tested = 0;
  for (const char* fam : {"llama", "qwen2"}) {
    const std::string dir = kFixtures + "/" + fam;
    if (!fs::exists(dir + "/reference.safetensors")) continue;
    const test::FixtureRef ref = test::read_fixture_ref(dir);
    auto run = [&](const char* fused) {
      setenv("LLMINT8_CUDA_FUSED_ACT", fused, 1);
      setenv("LLMINT8_CUDA_DECODE_ROWS", "8", 1);
      auto m = Model::load(dir, opts(Precision::Int8, "cuda"));
      unsetenv("LLMINT8_CUDA_FUSED_ACT");
      unsetenv("LLMINT8_CUDA_DECODE_ROWS");
      std::vector<float> out, l;
      auto s = m->new_session();
      for (int32_t t : ref.input_ids) {
        s->forward(std::span<const int32_t>(&t, 1), &l);
        out.insert(out.end(), l.begin(), l.end());
      }
      auto b = m->new_batch_session(4, 32);
      for (int64_t i = 0; i < 4; ++i)
        b->forward(i, std::vector<int32_t>(ref.input_ids.begin(), ref.input_ids.begin() + 1 + i), &l);
      for (int step = 0; step < 3; ++step) {
        std::vector<int32_t> toks;
        for (int64_t i = 0; i < 4; ++i) toks.push_back(ref.input_ids[size_t(i + step) % ref.input_ids.size()]);
        b->step(toks, &l);
        out.insert(out.end(), l.begin(), l.end());
      }
      return out;
    };
    const std::vector<float> fused = run("1"), separate = run("0");
    ASSERT_FALSE(fused.empty());
    EXPECT_EQ(fused, separate) << fam;
    ++tested;
  }
  if (tested == 0) GTEST_SKIP() << "gated fixtures absent";
}

TEST(CudaModel, Errors) {
  REQUIRE_GPU();
  const std::string dir = kFixtures + "/llama";
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << "fixture absent: " << dir;
  EXPECT_THROW(Model::load(dir, opts(Precision::F16, "cuda:99")), Error);
  EXPECT_THROW(Model::load(dir, opts(Precision::F16, "cuda:x")), Error);
  EXPECT_THROW(Model::load(dir, opts(Precision::F32, "cuda")), Error);
  auto m = Model::load(dir, opts(Precision::Int8, "cuda"));
  auto s = m->new_session(8);
  std::vector<float> l;
  const std::vector<int32_t> bad = {1, 5000};
  EXPECT_THROW(s->forward(bad, &l), Error);
  const std::vector<int32_t> nine(9, 3);
  EXPECT_THROW(s->forward(nine, &l), Error);  // over the session's capacity
  EXPECT_EQ(s->position(), 0);
  const std::vector<int32_t> ok = {1, 5, 6};
  s->forward(ok, &l);
  EXPECT_EQ(l.size(), size_t(m->vocab_size()));
  for (float v : l) EXPECT_TRUE(std::isfinite(v));
}

}  // namespace

// End-to-end CPU speed of a synthetic Llama of real size, int8 (LLM.int8()) against fp32.
//
// Shape: hidden 2048, 16 layers, 32 query heads with 8 KV heads (grouped-query attention, as in
// Llama-3.2-1B / TinyLlama), intermediate 8192, vocab 32000, untied lm_head: 1.10 B parameters,
// 4.4 GB in fp32, 2.2 GB as the fp16 checkpoint written here.
// Weights: uniform in +-0.035 (std 0.02, like transformers' initializer_range); the RMSNorm gains
// are 1 except for 4 "outlier feature" dimensions with gain 12, so that the activations entering
// every Linear have a few columns with |x| >= 6 most of the time -- the situation LLM.int8()'s
// decomposition exists for, and the one whose cost this measures.
//
// The checkpoint goes to $LLMINT8_BENCH_DIR (default /tmp/llmint8_bench_llama2048x16) and is
// reused by later runs when complete. Measured per precision: prefill of a 128-token prompt
// (tokens/s) and decode of 32 tokens after an 8-token prompt (tokens/s); plus the weight bytes as
// held against the same weights in 16-bit. BM_PairedRatio runs int8 and fp32 back to back per
// round and reports the median ratio (robust to the load of a shared machine). A summary table
// follows the Google Benchmark output.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors_writer.h"
#include "llmint8/dtype.h"
#include "llmint8/model.h"

namespace fs = std::filesystem;
using namespace llmint8;

namespace {

constexpr int64_t kHidden = 2048, kLayers = 16, kHeads = 32, kKvHeads = 8, kInter = 8192, kVocab = 32000;
constexpr int64_t kHeadDim = kHidden / kHeads;
constexpr int kPrefill = 128, kDecodePrompt = 8, kDecode = 32;
constexpr int64_t kOutlierDims[] = {17, 412, 1031, 1800};

std::string bench_dir() {
  const char* e = std::getenv("LLMINT8_BENCH_DIR");
  return e && *e ? e : "/tmp/llmint8_bench_llama2048x16";
}

int bench_threads() {
  const char* e = std::getenv("LLMINT8_BENCH_THREADS");
  return e && *e ? std::atoi(e) : 0;
}

// xorshift64*: fast, deterministic weights.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
  float uniform(float a) { return (float(next() >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f) * a; }
};

void write_synthetic_llama(const std::string& dir) {
  const std::string done = dir + "/.complete";
  if (fs::exists(done)) return;
  fs::create_directories(dir);
  std::fprintf(stderr, "writing the synthetic checkpoint to %s (2.2 GB, once)...\n", dir.c_str());
  {
    std::ofstream c(dir + "/config.json");
    c << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": )" << kHidden
      << R"(, "num_hidden_layers": )" << kLayers << R"(, "num_attention_heads": )" << kHeads
      << R"(, "num_key_value_heads": )" << kKvHeads << R"(, "intermediate_size": )" << kInter
      << R"(, "vocab_size": )" << kVocab
      << R"(, "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
 "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"})";
  }
  struct T {
    std::string name;
    std::vector<int64_t> shape;
    bool norm;
  };
  std::vector<T> ts;
  ts.push_back({"model.embed_tokens.weight", {kVocab, kHidden}, false});
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back({p + "input_layernorm.weight", {kHidden}, true});
    ts.push_back({p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, false});
    ts.push_back({p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}, false});
    ts.push_back({p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}, false});
    ts.push_back({p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}, false});
    ts.push_back({p + "post_attention_layernorm.weight", {kHidden}, true});
    ts.push_back({p + "mlp.gate_proj.weight", {kInter, kHidden}, false});
    ts.push_back({p + "mlp.up_proj.weight", {kInter, kHidden}, false});
    ts.push_back({p + "mlp.down_proj.weight", {kHidden, kInter}, false});
  }
  ts.push_back({"model.norm.weight", {kHidden}, true});
  ts.push_back({"lm_head.weight", {kVocab, kHidden}, false});

  io::SafetensorsWriter w(dir + "/model.safetensors", {{"format", "pt"}});
  for (const auto& t : ts) w.add(t.name, DType::F16, t.shape);
  Rng rng(2022);
  std::vector<f16> buf;
  for (const auto& t : ts) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    buf.resize(size_t(n));
    if (t.norm) {
      for (auto& x : buf) x = to_f16(1.0f);
      for (int64_t d : kOutlierDims) buf[size_t(d)] = to_f16(12.0f);
    } else {
      for (auto& x : buf) x = to_f16(rng.uniform(0.0346f));  // std 0.02
    }
    w.write(t.name, buf.data());
  }
  w.commit();
  std::ofstream(done) << "ok\n";
}

struct Measured {
  double prefill_tps = 0, decode_tps = 0;
  uint64_t weight_bytes = 0, weight_bytes_16 = 0;
  double load_s = 0;
};
std::map<std::string, Measured> g_results;

struct Loaded {
  std::unique_ptr<Model> model;
  double load_seconds = 0;
};

Loaded& get_model(Precision p) {
  static std::map<Precision, Loaded> cache;
  auto it = cache.find(p);
  if (it != cache.end()) return it->second;
  write_synthetic_llama(bench_dir());
  LoadOptions lo;
  lo.precision = p;
  lo.threads = bench_threads();
  const auto t0 = std::chrono::steady_clock::now();
  Loaded l;
  l.model = Model::load(bench_dir(), lo);
  l.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto& m = g_results[std::string(precision_name(p))];
  m.weight_bytes = l.model->info().weight_bytes;
  m.weight_bytes_16 = l.model->info().weight_bytes_16bit;
  m.load_s = l.load_seconds;
  return cache.emplace(p, std::move(l)).first->second;
}

std::vector<int32_t> prompt_ids(int n) {
  Rng rng(7);
  std::vector<int32_t> ids = {1};
  while (int(ids.size()) < n) ids.push_back(int32_t(3 + rng.next() % (kVocab - 3)));
  return ids;
}



void BM_Prefill(benchmark::State& state, Precision p) {
  Loaded& l = get_model(p);
  const auto ids = prompt_ids(kPrefill);
  std::vector<float> logits;
  double secs = 0;
  int64_t n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto s = l.model->new_session(kPrefill);
    state.ResumeTiming();
    const auto t0 = std::chrono::steady_clock::now();
    s->forward(ids, &logits);
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++n;
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["tokens_per_s"] = benchmark::Counter(double(kPrefill) * double(n) / secs);
  g_results[std::string(precision_name(p))].prefill_tps = double(kPrefill) * double(n) / secs;
}

void BM_Decode(benchmark::State& state, Precision p) {
  Loaded& l = get_model(p);
  const auto ids = prompt_ids(kDecodePrompt);
  std::vector<float> logits;
  double secs = 0;
  int64_t n = 0;
  for (auto _ : state) {
    auto s = l.model->new_session(kDecodePrompt + kDecode);
    s->forward(ids, &logits);
    int32_t next = 3;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kDecode; ++i) {
      s->forward(std::span<const int32_t>(&next, 1), &logits);
      next = int32_t(3 + (next * 7919 + i) % (kVocab - 3));
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(dt);
    secs += dt;
    ++n;
  }
  state.counters["tokens_per_s"] = benchmark::Counter(double(kDecode) * double(n) / secs);
  g_results[std::string(precision_name(p))].decode_tps = double(kDecode) * double(n) / secs;
}


// int8 and fp32 back to back in every round, so both see the same machine load (this machine's
// 2 cores are shared); the ratio of each round, then the median over rounds.
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
std::vector<double> g_prefill_ratios, g_decode_ratios;

double time_prefill(Model& m) {
  const auto ids = prompt_ids(kPrefill);
  std::vector<float> logits;
  auto s = m.new_session(kPrefill);
  const auto t0 = std::chrono::steady_clock::now();
  s->forward(ids, &logits);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double time_decode(Model& m) {
  const auto ids = prompt_ids(kDecodePrompt);
  std::vector<float> logits;
  auto s = m.new_session(kDecodePrompt + kDecode);
  s->forward(ids, &logits);
  int32_t next = 3;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kDecode; ++i) {
    s->forward(std::span<const int32_t>(&next, 1), &logits);
    next = int32_t(3 + (next * 7919 + i) % (kVocab - 3));
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_PairedRatio(benchmark::State& state, bool decode) {
  Model& m8 = *get_model(Precision::Int8).model;
  Model& m32 = *get_model(Precision::F32).model;
  std::vector<double> r;
  for (auto _ : state) {
    const double t8 = decode ? time_decode(m8) : time_prefill(m8);
    const double t32 = decode ? time_decode(m32) : time_prefill(m32);
    r.push_back(t32 / t8);
  }
  state.counters["int8_speedup_median"] = median(r);
  state.counters["min"] = *std::min_element(r.begin(), r.end());
  state.counters["max"] = *std::max_element(r.begin(), r.end());
  (decode ? g_decode_ratios : g_prefill_ratios) = r;
}

}  // namespace

BENCHMARK_CAPTURE(BM_Prefill, fp32, Precision::F32)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK_CAPTURE(BM_Decode, fp32, Precision::F32)->Unit(benchmark::kMillisecond)->Iterations(2)->UseManualTime();
BENCHMARK_CAPTURE(BM_Prefill, int8, Precision::Int8)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK_CAPTURE(BM_Decode, int8, Precision::Int8)->Unit(benchmark::kMillisecond)->Iterations(2)->UseManualTime();
BENCHMARK_CAPTURE(BM_PairedRatio, prefill, false)->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(BM_PairedRatio, decode, true)->Unit(benchmark::kMillisecond)->Iterations(5);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model_cpu: %s\n", e.what());
    return 1;
  }
  benchmark::Shutdown();
  std::printf("\nsynthetic Llama %lldx%lld (GQA %lld/%lld heads, intermediate %lld, vocab %lld), threads %d (0 = all)\n",
              (long long)kHidden, (long long)kLayers, (long long)kHeads, (long long)kKvHeads, (long long)kInter,
              (long long)kVocab, bench_threads());
  std::printf("| precision | load s | prefill %d tok/s | decode tok/s | weight bytes | vs 16-bit |\n", kPrefill);
  std::printf("|---|---|---|---|---|---|\n");
  for (const auto& [name, m] : g_results)
    std::printf("| %s | %.1f | %.1f | %.2f | %.3f GB | %.3fx |\n", name.c_str(), m.load_s, m.prefill_tps, m.decode_tps,
                double(m.weight_bytes) / 1e9, m.weight_bytes_16 ? double(m.weight_bytes) / double(m.weight_bytes_16) : 0.0);
  if (g_results.count("int8") && g_results.count("fp32")) {
    const auto& a = g_results["int8"];
    const auto& b = g_results["fp32"];
    std::printf("int8/fp32 from the separate runs above: prefill %.2fx, decode %.2fx; int8 weights %.3fx of fp16 (target <= 0.55x)\n",
                b.prefill_tps > 0 ? a.prefill_tps / b.prefill_tps : 0.0, b.decode_tps > 0 ? a.decode_tps / b.decode_tps : 0.0,
                a.weight_bytes_16 ? double(a.weight_bytes) / double(a.weight_bytes_16) : 0.0);
  }
  auto range = [](const std::vector<double>& v) {
    char b[96];
    if (v.empty()) return std::string("not run");
    std::snprintf(b, sizeof b, "%.2fx (min %.2f, max %.2f, %zu rounds)", median(v), *std::min_element(v.begin(), v.end()),
                  *std::max_element(v.begin(), v.end()), v.size());
    return std::string(b);
  };
  std::printf("int8/fp32 paired rounds: prefill %s; decode %s (target >= 2.5x)\n", range(g_prefill_ratios).c_str(),
              range(g_decode_ratios).c_str());
  return 0;
}

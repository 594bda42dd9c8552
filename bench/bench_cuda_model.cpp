// End-to-end GPU benchmark: a Llama-3-8B-shaped model (hidden 4096, 32 layers, 32/8 heads, head
// dim 128, intermediate 14336, vocab 128256) with synthetic weights generated in GPU memory
// (src/cuda/cuda_model.h: make_synthetic_cuda_model; nothing read from disk), LLM.int8() vs our
// fp16. Prefill: one forward of a P-token prompt (default 2048), median of --reps runs after a
// warm-up. Decode: batch 1, greedy, N steps (default 64) after the prompt, each step a Session::
// forward of one token that returns the [vocab] float logits to the host (the CUDA-graph path).
// Batched decode (--batches, default 8,32): a BatchSession of B sequences, each prefilled with the
// same P-token prompt, then N steps of one token per sequence (BatchSession::step, [B, vocab]
// logits to the host); tokens/s = B / median step time.
// A plain C++ program (it only uses the public model API), so it is built in every configuration
// and reports "no CUDA" where there is none.
//
//   bench_cuda_model [--layers L] [--prompt P] [--decode N] [--reps R] [--precisions int8,fp16]
//                    [--batches 8,32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_model.h"
#include "llmint8/error.h"
#include "llmint8/model.h"

using namespace llmint8;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Row {
  std::string prec;
  double gib = 0, prefill_s = 0, decode_step_s = 0, decode_total_s = 0, decode_nograph_s = 0;
  std::vector<std::pair<int64_t, double>> batch_step_s;  // (B, median step seconds)
};

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  size_t p0 = 0;
  while (p0 < s.size()) {
    size_t p1 = s.find(',', p0);
    if (p1 == std::string::npos) p1 = s.size();
    if (p1 > p0) out.push_back(std::atoll(s.substr(p0, p1 - p0).c_str()));
    p0 = p1 + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t layers = 32, prompt = 2048, steps = 64, reps = 5;
  std::string precs = "int8,fp16", batches_arg = "8,32";
  bool gpu_embeddings = false;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--gpu-embeddings") {  // a flag: the input embeddings in GPU memory too
      gpu_embeddings = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--layers") layers = std::atoll(argv[i + 1]);
    else if (a == "--prompt") prompt = std::atoll(argv[i + 1]);
    else if (a == "--decode") steps = std::atoll(argv[i + 1]);
    else if (a == "--reps") reps = std::atoll(argv[i + 1]);
    else if (a == "--precisions") precs = argv[i + 1];
    else if (a == "--batches") batches_arg = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  cuda::LlamaShape cfg;  // Llama-3-8B
  cfg.layers = layers;
  std::mt19937 rng(1234);
  std::vector<int32_t> ids(static_cast<size_t>(prompt));
  for (auto& t : ids) t = int32_t(rng() % uint32_t(cfg.vocab));

  std::vector<Row> rows;
  size_t p0 = 0;
  while (p0 <= precs.size()) {
    size_t p1 = precs.find(',', p0);
    if (p1 == std::string::npos) p1 = precs.size();
    const std::string name = precs.substr(p0, p1 - p0);
    p0 = p1 + 1;
    Precision p;
    if (!parse_precision(name, &p)) {
      std::fprintf(stderr, "unknown precision %s\n", name.c_str());
      return 2;
    }
    LoadOptions o;
    o.precision = p;
    o.device = "cuda";
    o.gpu_embeddings = gpu_embeddings;
    try {
      const auto t0 = Clock::now();
      auto m = cuda::make_synthetic_cuda_model(cfg, o, 1, 0.01f);
      std::fprintf(stderr, "%s: weights generated in %.1f s, %.2f GiB on the GPU, %.2f GiB in host memory\n",
                   name.c_str(), secs(t0, Clock::now()), double(cuda::resident_weight_bytes(*m)) / double(1ull << 30),
                   double(m->info().host_weight_bytes) / double(1ull << 30));
      Row r;
      r.prec = name;
      r.gib = double(cuda::resident_weight_bytes(*m)) / double(1ull << 30);
      auto s = m->new_session(prompt + steps + 8);
      std::vector<float> logits;
      // Warm-up: algorithm selection, scratch growth, the decode graph's capture.
      s->forward(ids, &logits);
      for (int i = 0; i < 3; ++i) {
        const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        s->forward(std::span<const int32_t>(&t, 1), &logits);
      }
      std::vector<double> pre;
      for (int64_t r_ = 0; r_ < reps; ++r_) {
        s->reset();
        const auto a = Clock::now();
        s->forward(ids, &logits);
        pre.push_back(secs(a, Clock::now()));
      }
      r.prefill_s = median(pre);
      // Decode after the prompt (its cache is in place from the last prefill).
      std::vector<double> dec;
      const auto d0 = Clock::now();
      for (int64_t i = 0; i < steps; ++i) {
        const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        const auto a = Clock::now();
        s->forward(std::span<const int32_t>(&t, 1), &logits);
        dec.push_back(secs(a, Clock::now()));
      }
      r.decode_total_s = secs(d0, Clock::now());
      r.decode_step_s = median(dec);
      // The same steps with plain launches instead of the CUDA graph (what the graph saves).
      setenv("LLMINT8_CUDA_NO_GRAPH", "1", 1);
      std::vector<double> dec_ng;
      for (int64_t i = 0; i < 8 && s->position() < prompt + steps + 8; ++i) {
        const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        const auto a = Clock::now();
        s->forward(std::span<const int32_t>(&t, 1), &logits);
        dec_ng.push_back(secs(a, Clock::now()));
      }
      unsetenv("LLMINT8_CUDA_NO_GRAPH");
      r.decode_nograph_s = median(dec_ng);
      std::fprintf(stderr, "%s: prefill %.1f ms, decode step %.2f ms (%.2f ms without the CUDA graph)\n",
                   name.c_str(), 1e3 * r.prefill_s, 1e3 * r.decode_step_s, 1e3 * r.decode_nograph_s);
      s.reset();  // the batch-1 session's memory back
      for (int64_t B : parse_list(batches_arg)) {
        if (B <= 1) continue;
        auto bs = m->new_batch_session(B, prompt + steps + 8);
        for (int64_t b = 0; b < B; ++b) bs->forward(b, ids, &logits);
        const int64_t V = cfg.vocab;
        auto next = [&] {
          std::vector<int32_t> t(static_cast<size_t>(B));
          for (int64_t b = 0; b < B; ++b)
            t[size_t(b)] = int32_t(std::max_element(logits.begin() + b * V, logits.begin() + (b + 1) * V) -
                                   (logits.begin() + b * V));
          return t;
        };
        logits.assign(size_t(B * V), 0.f);
        for (int i = 0; i < 2; ++i) bs->step(next(), &logits);  // warm-up, graph capture
        std::vector<double> st;
        for (int64_t i = 0; i < steps - 2; ++i) {
          const auto t = next();
          const auto a = Clock::now();
          bs->step(t, &logits);
          st.push_back(secs(a, Clock::now()));
        }
        r.batch_step_s.push_back({B, median(st)});
        std::fprintf(stderr, "%s: batch %lld decode step %.2f ms (%.0f tok/s)\n", name.c_str(), (long long)B,
                     1e3 * median(st), double(B) / median(st));
      }
      rows.push_back(r);
    } catch (const Error& e) {
      std::printf("%s: %s\n", name.c_str(), e.what());
      return 1;
    }
  }

  std::printf("\nLlama-3-8B-shaped (%lld layers), synthetic weights, prompt %lld, decode %lld steps at batch 1, "
              "input embeddings in %s memory\n",
              (long long)layers, (long long)prompt, (long long)steps, gpu_embeddings ? "GPU" : "host");
  std::printf("| precision | GPU weights GiB | prefill ms | prefill tok/s | decode ms/token (median) | decode tok/s (median) | decode tok/s (wall, %lld steps) |\n",
              (long long)steps);
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows)
    std::printf("| %s | %.2f | %.1f | %.0f | %.2f | %.1f | %.1f |\n", r.prec.c_str(), r.gib, 1e3 * r.prefill_s,
                double(prompt) / r.prefill_s, 1e3 * r.decode_step_s, 1.0 / r.decode_step_s,
                double(steps) / r.decode_total_s);
  bool any_batch = false;
  for (const Row& r : rows) any_batch |= !r.batch_step_s.empty();
  if (any_batch) {
    std::printf("\nBatched decode (each sequence after the %lld-token prompt), tokens/s over all sequences\n",
                (long long)prompt);
    std::printf("| precision | batch | step ms (median) | decode tok/s |\n|---|---:|---:|---:|\n");
    for (const Row& r : rows) {
      std::printf("| %s | 1 | %.2f | %.1f |\n", r.prec.c_str(), 1e3 * r.decode_step_s, 1.0 / r.decode_step_s);
      for (auto [B, t] : r.batch_step_s)
        std::printf("| %s | %lld | %.2f | %.1f |\n", r.prec.c_str(), (long long)B, 1e3 * t, double(B) / t);
    }
  }
  if (rows.size() == 2) {
    const Row &a = rows[0], &b = rows[1];
    for (size_t i = 0; i < a.batch_step_s.size() && i < b.batch_step_s.size(); ++i)
      std::printf("%s / %s: batch %lld decode speed %.2fx\n", a.prec.c_str(), b.prec.c_str(),
                  (long long)a.batch_step_s[i].first, b.batch_step_s[i].second / a.batch_step_s[i].second);
    std::printf("\n%s / %s: weights %.3fx, prefill speed %.2fx, decode speed %.2fx\n", a.prec.c_str(), b.prec.c_str(),
                a.gib / b.gib, b.prefill_s / a.prefill_s, b.decode_step_s / a.decode_step_s);
  }
  return 0;
}

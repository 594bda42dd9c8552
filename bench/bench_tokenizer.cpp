// Tokenizer throughput on WikiText-2 test (raw, ~1.3 MB): GPT-2 byte-level BPE (regex
// pre-tokenizer, many short words), stories260K SentencePiece-style BPE from tokenizer.json (no
// pre-tokenizer: each line is one long word for the merge queue) and the same vocabulary through
// libsentencepiece. The shared folder comes from $LLMINT8_SHARED_DIR, else the build's setting,
// else ../shared.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "io/tokenizer_impl.h"
#include "llmint8/tokenizer.h"

namespace {

std::string shared_dir() {
  if (const char* e = std::getenv("LLMINT8_SHARED_DIR")) return e;
#ifdef LLMINT8_SHARED_DIR
  return LLMINT8_SHARED_DIR;
#else
  return "../shared";
#endif
}

const std::string& wiki_text() {
  static const std::string text = [] {
    std::ifstream f(shared_dir() + "/data/wikitext-2/wiki.test.raw", std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }();
  return text;
}

void run(benchmark::State& state, const llmint8::Tokenizer& tok) {
  const std::string& text = wiki_text();
  if (text.empty()) {
    state.SkipWithError("wiki.test.raw not found (set LLMINT8_SHARED_DIR)");
    return;
  }
  size_t n = 0;
  for (auto _ : state) {
    const auto ids = tok.encode(text);
    n = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.counters["tokens"] = static_cast<double>(n);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_EncodeGpt2(benchmark::State& state) {
  try {
    const auto tok = llmint8::Tokenizer::load(shared_dir() + "/models/gpt2-tokenizer");
    run(state, *tok);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_EncodeGpt2)->Unit(benchmark::kMillisecond);

void BM_EncodeStories260KJson(benchmark::State& state) {
  try {
    const auto tok = llmint8::Tokenizer::load(shared_dir() + "/models/stories260K");
    run(state, *tok);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_EncodeStories260KJson)->Unit(benchmark::kMillisecond);

void BM_EncodeStories260KSentencePiece(benchmark::State& state) {
  try {
    const std::string dir = shared_dir() + "/models/stories260K";
    const auto tok = llmint8::io::load_sentencepiece_model(dir + "/tokenizer.model", dir);
    run(state, *tok);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_EncodeStories260KSentencePiece)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

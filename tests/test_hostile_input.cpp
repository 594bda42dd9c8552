// Hostile input across the parsers of untrusted files: resource caps (a tokenizer.json with
// millions of merges, an oversized file) fail with one-line Errors instead of exhausting memory,
// and the inputs the fuzz targets (tests/fuzz) found to break a promise stay fixed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "io/read_file.h"
#include "io/safetensors.h"
#include "llmint8/error.h"
#include "llmint8/tokenizer.h"
#include "model/config.h"
#include "model/quantize.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using namespace llmint8;

namespace {

using HostileInput = test::TempDirTest;

// Runs `load` and expects an Error naming `file` and containing `problem`, on one line.
template <class F>
void expect_error(F&& load, const std::string& file, const std::string& problem) {
  try {
    load();
    ADD_FAILURE() << "loaded without error, expected '" << problem << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << "message does not name " << file << ": " << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
  }
}

// tokenizer.json of a BPE model over {a, b} with `merges` merge entries produced by `merge(i)`.
template <class M>
void write_tokenizer_with_merges(const std::string& p, size_t merges, M merge) {
  std::FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr) << p;
  std::fputs(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [)", f);
  for (size_t i = 0; i < merges; ++i) {
    if (i) std::fputc(',', f);
    std::fputs(merge(i), f);
  }
  std::fputs("]}}", f);
  ASSERT_EQ(std::fclose(f), 0) << p;
}

}  // namespace

// A tokenizer.json with 10 million merges (over the 5M cap) is a row of the bad-input matrix
// (BadInput/Matrix.Rejects/tokenizer_json_with_10M_merges), through the CLI.

TEST_F(HostileInput, TokenizerJsonUnderTheCapsStillLoads) {
  // A few duplicate merges of a tiny vocabulary load (the cap is on counts, not on content);
  // merges written as pairs load as well.
  write_tokenizer_with_merges(path("tokenizer.json"), 3, [](size_t i) {
    return i % 2 ? "[\"a\",\"b\"]" : "\"a b\"";
  });
  const auto tok = Tokenizer::load(dir_.string());
  EXPECT_EQ(tok->vocab_size(), 3);
  EXPECT_EQ(tok->encode("ab", false), (std::vector<int32_t>{2}));
}

TEST_F(HostileInput, TokenizerJsonWithTooManyVocabularyEntries) {
  std::string text = R"({"model": {"type": "BPE", "merges": [], "vocab": {)";
  text.reserve(2'000'001 * 16);
  for (int i = 0; i <= 2'000'000; ++i) {
    if (i) text += ',';
    text += "\"t" + std::to_string(i) + "\":" + std::to_string(i);
  }
  text += "}}}";
  write("tokenizer.json", text);
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer.json"),
               "more than 2000000 vocabulary entries");
}

TEST_F(HostileInput, OversizedTokenizerJsonRefusedBeforeReading) {
  // A sparse 1 GiB + 1 byte file: refused from its size, without reading it.
  write("tokenizer.json", "{");
  fs::resize_file(path("tokenizer.json"), (uint64_t(1) << 30) + 1);
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer.json"),
               "1073741825 bytes, over the 1073741824-byte limit");
}

// Found by tests/fuzz/fuzz_tokenizer_json: token strings from the file went into messages raw.
TEST_F(HostileInput, TokenizerMessagesStayOneLine) {
  write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "\n": 3, ",": 3}, "merges": []}})");
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer.json"),
               R"(vocab id 3 of '\n' is out of range)");
}

// Found by tests/fuzz/fuzz_config: the architecture name went into the message raw.
TEST_F(HostileInput, ConfigMessagesStayOneLine) {
  write("config.json", R"({"architectures": ["LlamaForCausal\n\u001b[2J"], "hidden_size": 64,
      "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 8,
      "vocab_size": 512, "max_position_embeddings": 256})");
  expect_error([&] { model::load_config(dir_.string()); }, path("config.json"),
               R"(unsupported architecture 'LlamaForCausal\n\x1b[2J')");
}

// Found by tests/fuzz/fuzz_config: a whole float outside int64's range was cast to int64
// (undefined; the sanitizer build reports it), and 4 * hidden_size (the default intermediate size
// of GPT-2 / NeoX / BLOOM) overflowed before hidden_size was bounded.
TEST_F(HostileInput, ConfigHugeNumbersAreRefusedNotOverflowed) {
  const std::string base = R"("intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 8,
      "vocab_size": 512, "max_position_embeddings": 256)";
  write("config.json", R"({"model_type": "llama", "hidden_size": 7e123, )" + base + "}");
  expect_error([&] { model::load_config(dir_.string()); }, path("config.json"),
               "field 'hidden_size' must be an integer, got 7e+123");
  write("config.json", R"({"model_type": "gpt2", "n_embd": 4611686018427387904, "n_layer": 2,
      "n_head": 1, "vocab_size": 512, "n_positions": 256})");
  expect_error([&] { model::load_config(dir_.string()); }, path("config.json"),
               "hidden_size (4611686018427387904) is implausibly large");
  write("config.json", R"({"model_type": "llama", "hidden_size": 64.0, )" + base + "}");
  EXPECT_EQ(model::load_config(dir_.string()).hidden_size, 64);  // whole floats still accepted
}

// Found by tests/fuzz/fuzz_tokenizer_json: ids written as floats outside int64's range
// ("id": 1.3e45) went through nlohmann's get<int64_t>(), a float-to-int cast that is undefined
// there (the sanitizer build reports it); every id and count is now required to be an integer.
TEST_F(HostileInput, TokenizerFloatIdsAreRefused) {
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []})";
  write("tokenizer.json", R"({"added_tokens": [{"id": 1.33e45, "content": "<s>"}], )" + model + "}");
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer.json"),
               "added token id is not an integer (number)");
  write("tokenizer.json", R"({"decoder": {"type": "Strip", "content": " ", "start": 1e300, "stop": 0}, )" +
                              model + "}");
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer.json"),
               "Strip decoder start is not an integer (number)");
  write("tokenizer.json", R"({"post_processor": {"type": "BertProcessing", "cls": ["a", 1e100], "sep": ["b", 1]}, )" +
                              model + "}");
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer.json"),
               "BertProcessing cls id is not an integer (number)");
}

// ---- size caps of the small files of a model directory (io/read_file.h) ----------------------

namespace {
// A sparse file: `size` bytes of which only `prefix` is written.
void sparse(const std::string& p, const std::string& prefix, uint64_t size) {
  test::write_file(p, prefix);
  fs::resize_file(p, size);
}
const std::string kTinyBpe = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
}  // namespace

TEST_F(HostileInput, ReadFileCappedRefusesBeforeReading) {
  write("exact", std::string(100, 'x'));
  EXPECT_EQ(io::read_file_capped(path("exact"), 100), std::string(100, 'x'));
  expect_error([&] { io::read_file_capped(path("exact"), 99); }, path("exact"),
               "file is 100 bytes, over the 99-byte limit for a exact");
  expect_error([&] { io::read_file_capped(path("missing"), 99); }, path("missing"), "cannot open");
  expect_error([&] { io::read_file_capped(dir_.string(), 99); }, dir_.string(), "is a directory, expected a regular file");
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);  // no writer: a blocking open would hang
  expect_error([&] { io::read_file_capped(path("fifo"), 99); }, path("fifo"), "is a FIFO, expected a regular file");
  fs::create_symlink("/dev/zero", path("zero"));  // endless: reading it would exhaust memory
  expect_error([&] { io::read_file_capped(path("zero"), 1 << 20); }, path("zero"),
               "is a character device, expected a regular file");
}

TEST_F(HostileInput, OversizedConfigFilesAreRefused) {
  const uint64_t over = io::kMaxConfigFileBytes + 1;
  const std::string limit = "file is 16777217 bytes, over the 16777216-byte limit";
  sparse(path("config.json"), "{", over);
  expect_error([&] { model::load_config(dir_.string()); }, path("config.json"), limit + " for a config.json");

  // A valid config.json, an oversized generation_config.json.
  write("config.json", R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
      "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512, "max_position_embeddings": 256})");
  ASSERT_NO_THROW(model::load_config(dir_.string()));
  sparse(path("generation_config.json"), "{", over);
  expect_error([&] { model::load_config(dir_.string()); }, path("generation_config.json"),
               limit + " for a generation_config.json");

  // tokenizer_config.json, consulted for BOS/EOS when config.json has no ids (here: none).
  fs::remove(path("config.json"));
  write("tokenizer.json", kTinyBpe);
  ASSERT_NO_THROW(Tokenizer::load(dir_.string()));
  sparse(path("tokenizer_config.json"), "{", over);
  expect_error([&] { Tokenizer::load(dir_.string()); }, path("tokenizer_config.json"),
               limit + " for a tokenizer_config.json");
}

TEST_F(HostileInput, OversizedShardIndexIsRefused) {
  write("model-00001-of-00001.safetensors", std::string("\x02\0\0\0\0\0\0\0{}", 10));
  write("model.safetensors.index.json", R"({"weight_map": {}})");
  ASSERT_NO_THROW(io::Checkpoint::open(dir_.string()));
  sparse(path("model.safetensors.index.json"), "{", io::kMaxIndexFileBytes + 1);
  expect_error([&] { io::Checkpoint::open(dir_.string()); }, path("model.safetensors.index.json"),
               "file is 67108865 bytes, over the 67108864-byte limit for a model.safetensors.index.json");
}

// special_tokens_map.json is never interpreted, only copied by quantize: refused there, and the
// half-written output removed.
TEST_F(HostileInput, OversizedSpecialTokensMapIsRefusedByQuantize) {
  const fs::path fixture = fs::path(LLMINT8_SOURCE_DIR) / "tests/fixtures/llama";
  const fs::path in = dir_ / "in", out = dir_ / "out";
  fs::copy(fixture, in);
  sparse((in / "special_tokens_map.json").string(), "{", io::kMaxConfigFileBytes + 1);
  expect_error([&] { model::quantize_checkpoint(in.string(), out.string(), {}); },
               (in / "special_tokens_map.json").string(),
               "file is 16777217 bytes, over the 16777216-byte limit for a special_tokens_map.json");
  EXPECT_EQ(listing(), (std::set<std::string>{"in"}));
}

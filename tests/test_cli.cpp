// The llmint8 command-line tool, run as a separate process (LLMINT8_CLI): reference outputs on
// stories260K, JSON contracts, and bad options -- each must end with exit code != 0 and exactly
// one stderr line "llmint8: error: ...", never a signal. Corrupted inputs are the rows of
// tests/test_bad_input_matrix.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
namespace test = llmint8::test;
using nlohmann::json;

namespace {

const std::string kShared = LLMINT8_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K";
const std::string kGpt2Tok = kShared + "/models/gpt2-tokenizer";

using test::CliOptions;
using Run = test::CliRun;
using test::describe;
using test::run_cli;
const auto& slurp = test::read_file;
const auto& spit = test::write_file;

// A failure the way the CLI promises: no signal, exit != 0, one stderr line "llmint8: error: ...".
Run expect_clean_error(const std::vector<std::string>& args, const std::string& must_mention = {}) {
  Run r = run_cli(args);
  const std::string d = describe(args, r);
  EXPECT_FALSE(r.signaled) << (r.timed_out ? "hung: " : "crashed: ") << d;
  EXPECT_NE(r.exit_code, 0) << d;
  EXPECT_EQ(r.err.rfind("llmint8: error: ", 0), 0u) << d;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr must be one line: " << d;
  EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n') << d;
  if (!must_mention.empty()) {
    EXPECT_NE(r.err.find(must_mention), std::string::npos) << d;
  }
  return r;
}

Run expect_ok(const std::vector<std::string>& args, const std::string& cwd = {}) {
  Run r = run_cli(args, CliOptions{cwd});
  EXPECT_FALSE(r.signaled) << describe(args, r);
  EXPECT_EQ(r.exit_code, 0) << describe(args, r);
  return r;
}

json parse_one_object(const Run& r) {
  json j;
  try {
    j = json::parse(r.out);  // throws on anything but one JSON value (whitespace around is fine)
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON value: " << e.what() << "\n" << r.out.substr(0, 400);
    return json::object();
  }
  EXPECT_TRUE(j.is_object());
  return j;
}

std::string lambada_passages(int n) {
  std::ifstream f(kShared + "/data/lambada/lambada_test.jsonl");
  std::string line, out;
  for (int i = 0; i < n && std::getline(f, line); ++i) {
    if (i) out += "\n\n";
    out += json::parse(line)["text"].get<std::string>();
  }
  return out;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kStories + "/config.json") || !fs::exists(kShared + "/reference/stories260K_reference.json"))
      GTEST_SKIP() << "shared data not found at " << kShared << " (LLMINT8_SHARED_DIR)";
    ref = json::parse(slurp(kShared + "/reference/stories260K_reference.json"));
  }
  // A writable copy of stories260K under tmp/name (copied at test time, never committed).
  std::string copy_model(const std::string& name) {
    const std::string dir = tmp + "/" + name;
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kStories)) {
      fs::copy_file(e.path(), dir + "/" + e.path().filename().string(), fs::copy_options::overwrite_existing);
      fs::permissions(dir + "/" + e.path().filename().string(), fs::perms::owner_read | fs::perms::owner_write,
                      fs::perm_options::add);
    }
    return dir;
  }
  std::string text_file(const std::string& name, const std::string& content) {
    const std::string p = tmp + "/" + name;
    spit(p, content);
    return p;
  }
  json ref;
  test::TempDir tmp_dir;
  const std::string tmp = tmp_dir.str();
};

}  // namespace

// ------------------------------------------------------------------------------ generate ----

TEST_F(Cli, GenerateGreedyFromBosReproducesReference) {
  const std::string want = ref["greedy_from_bos_text_40_new_tokens"].get<std::string>();
  for (const char* p : {"fp32", "int8"}) {
    auto r = expect_ok({"generate", "-m", kStories, "--greedy", "-n", "40", "--precision", p});
    EXPECT_EQ(r.out, want + "\n") << p;
  }
}

TEST_F(Cli, GenerateJson) {
  auto r = expect_ok({"generate", "-m", kStories, "-n", "40", "--precision", "fp32", "--json"});
  json j = parse_one_object(r);
  for (const char* k : {"prompt", "text", "ids", "new_tokens", "stopped_at_eos", "precision", "threshold",
                        "prefill_tokens_per_s", "decode_tokens_per_s"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j.value("text", ""), ref["greedy_from_bos_text_40_new_tokens"].get<std::string>());
  EXPECT_EQ(j.value("new_tokens", 0), 40);
  EXPECT_EQ(j.value("precision", ""), "fp32");
  const auto want_ids = ref["greedy_from_bos_first_ids"].get<std::vector<int>>();
  const auto ids = j.value("ids", std::vector<int>{});
  ASSERT_EQ(ids.size(), 41u);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + ptrdiff_t(want_ids.size())), want_ids);
  EXPECT_GT(j.value("decode_tokens_per_s", 0.0), 0.0);
}

TEST_F(Cli, GenerateDefaultModelFromRepositoryRoot) {
  // The README quick start: run from the repository root, model at ../shared/models/stories260K.
  if (!fs::exists(fs::path(LLMINT8_SOURCE_DIR) / "../shared/models/stories260K/config.json"))
    GTEST_SKIP() << "no ../shared next to " << LLMINT8_SOURCE_DIR;
  auto r = expect_ok({"generate", "-n", "40"}, LLMINT8_SOURCE_DIR);
  EXPECT_EQ(r.out, ref["greedy_from_bos_text_40_new_tokens"].get<std::string>() + "\n");
}

TEST_F(Cli, GeneratePromptEchoAndContinuation) {
  auto echo = expect_ok({"generate", "-m", kStories, "-p", "Once upon a time", "-n", "12"});
  auto cont = expect_ok({"generate", "-m", kStories, "-p", "Once upon a time", "-n", "12", "--no-echo"});
  EXPECT_EQ(echo.out, "Once upon a time" + cont.out);
  // The greedy continuation of the reference's own prefix: BOS "Once upon a time" -> ", there was ..."
  EXPECT_EQ(cont.out.rfind(", there was a little girl", 0), 0u) << cont.out;
}

TEST_F(Cli, GenerateSamplingIsSeeded) {
  const std::vector<std::string> a = {"generate", "-m", kStories, "-n", "30", "--temperature", "1.0",
                                      "--top-p", "0.9", "--seed", "7", "--json"};
  auto r1 = expect_ok(a), r2 = expect_ok(a);
  auto b = a;
  b[10] = "8";
  auto r3 = expect_ok(b);
  const auto t1 = parse_one_object(r1).value("ids", std::vector<int>{});
  EXPECT_EQ(t1, parse_one_object(r2).value("ids", std::vector<int>{}));
  EXPECT_NE(t1, parse_one_object(r3).value("ids", std::vector<int>{}));
}

// ---------------------------------------------------------------------------- perplexity ----

TEST_F(Cli, PerplexityJson) {
  const std::string f = text_file("lambada20.txt", lambada_passages(20));
  auto r = expect_ok({"perplexity", "-m", kStories, "--text", f, "--ctx", "128", "--json"});
  json j = parse_one_object(r);
  for (const char* k : {"ppl", "tokens", "precision", "threshold", "ctx"}) EXPECT_TRUE(j.contains(k)) << k;
  const double ppl = j.value("ppl", 0.0);
  EXPECT_TRUE(std::isfinite(ppl));
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 512.0);  // better than uniform over the vocabulary
  EXPECT_EQ(j.value("precision", ""), "int8");
  EXPECT_EQ(j.value("threshold", -1.0), 6.0);
  EXPECT_EQ(j.value("ctx", 0), 128);

  auto lim = expect_ok({"perplexity", "-m", kStories, "--text", f, "--ctx", "64", "--limit-tokens", "300", "--json"});
  json jl = parse_one_object(lim);
  EXPECT_EQ(jl.value("tokens", 0), 300);
  EXPECT_EQ(jl.value("tokens_scored", 0), 300 - 5);  // windows of 64: 63*4 + 43
}

// ------------------------------------------------------------------------------ tokenize ----

TEST_F(Cli, TokenizeOnTokenizerOnlyDirectory) {
  const json tref = json::parse(slurp(kShared + "/reference/tokenizer_reference.json"));
  const std::string f = text_file("unicode.txt", tref["unicode"]["text"].get<std::string>());
  const auto want = tref["unicode"]["gpt2_ids"].get<std::vector<int>>();
  auto r = expect_ok({"tokenize", "-m", kGpt2Tok, "--text", f, "--json"});
  EXPECT_EQ(parse_one_object(r).value("ids", std::vector<int>{}), want);
  auto plain = expect_ok({"tokenize", "-m", kGpt2Tok, "--text", f});
  std::string line;
  for (size_t i = 0; i < want.size(); ++i) line += (i ? " " : "") + std::to_string(want[i]);
  EXPECT_EQ(plain.out, line + "\n");
  // Llama: BOS unless --no-special
  auto s = parse_one_object(expect_ok({"tokenize", "-m", kStories, "-p", "Once upon a time", "--json"}))
               .value("ids", std::vector<int>{});
  auto ns = parse_one_object(expect_ok({"tokenize", "-m", kStories, "-p", "Once upon a time", "--json", "--no-special"}))
                .value("ids", std::vector<int>{});
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s[0], 1);
  EXPECT_EQ(std::vector<int>(s.begin() + 1, s.end()), ns);
}

// ---------------------------------------------------------------------------------- info ----

TEST_F(Cli, InfoJson) {
  auto r = expect_ok({"info", "-m", kStories, "--json"});
  json j = parse_one_object(r);
  for (const char* k : {"architecture", "parameters", "precision", "threshold", "quantized_modules",
                        "quantized_modules_count", "float_modules", "weight_bytes_16bit", "weight_bytes",
                        "weight_ratio_vs_16bit", "peak_rss_bytes", "largest_tensor_bytes"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j.value("architecture", ""), "LlamaForCausalLM");
  EXPECT_EQ(j.value("quantized_modules_count", 0), 5 * 7);  // q k v o gate up down per layer
  EXPECT_LT(j.value("weight_bytes", 0.0), j.value("weight_bytes_16bit", 0.0));
  EXPECT_GT(j.value("peak_rss_bytes", 0), 0);

  auto f = parse_one_object(expect_ok({"info", "-m", kStories, "--precision", "fp32", "--json"}));
  EXPECT_EQ(f.value("quantized_modules_count", -1), 0);
  auto s = parse_one_object(expect_ok({"info", "-m", kStories, "--skip", "mlp.down_proj", "--json"}));
  EXPECT_EQ(s.value("quantized_modules_count", -1), 5 * 6);
}

// ------------------------------------------------------------------------------ quantize ----

TEST_F(Cli, QuantizeThenGenerate) {
  const std::string out = tmp + "/stories-int8";
  auto q = expect_ok({"quantize", "-m", kStories, "-o", out, "--json"});
  json j = parse_one_object(q);
  EXPECT_EQ(j["quantized_modules_count"], 35);
  EXPECT_EQ(j["shards"], json({"model.safetensors"}));
  EXPECT_LT(j["output_bytes"].get<double>(), 0.55 * j["input_bytes"].get<double>());
  // The saved model generates the reference continuation, from its own tokenizer files.
  const std::string want = ref["greedy_from_bos_text_40_new_tokens"].get<std::string>();
  EXPECT_EQ(expect_ok({"generate", "-m", out, "--greedy", "-n", "40"}).out, want + "\n");
  json info = parse_one_object(expect_ok({"info", "-m", out, "--json"}));
  EXPECT_EQ(info["quantized_modules_count"], 35);
  EXPECT_EQ(info["threshold"], 6.0);
  // Never over an existing directory; bad arguments are one clean line.
  expect_clean_error({"quantize", "-m", kStories, "-o", out}, "already exists");
  expect_clean_error({"quantize", "-m", out, "-o", tmp + "/again"}, "already an 8-bit checkpoint");
  expect_clean_error({"quantize", "-m", kStories, "-o", tmp + "/x", "--shard-size", "lots"}, "--shard-size");
  expect_clean_error({"quantize", "-m", kStories, "-o", tmp + "/no/such/parent/x"}, "no such directory");
  // --threshold overrides the checkpoint's quantization_config.
  json over = parse_one_object(expect_ok({"info", "-m", out, "--json", "--threshold", "0"}));
  EXPECT_EQ(over["threshold"], 0.0);
}

TEST_F(Cli, HelpHasExamples) {
  auto r = expect_ok({"--help"});
  EXPECT_NE(r.out.find("Examples"), std::string::npos);
  for (const char* sub : {"generate", "perplexity", "tokenize", "info"}) {
    auto h = expect_ok({sub, "--help"});
    EXPECT_NE(h.out.find("llmint8 " + std::string(sub)), std::string::npos) << sub;
  }
}

// ------------------------------------------------------------------------------ bad input ----

// Corrupted model directories, files and texts, for every subcommand: the bad-input matrix
// (tests/test_bad_input_matrix.cpp). Here: NaN and Inf weights under every precision (the matrix
// runs the default, int8).
TEST_F(Cli, NonFiniteWeightsUnderEveryPrecision) {
  for (const char* bad : {"nan", "inf"}) {
    const std::string d = copy_model(std::string("weights_") + bad);
    std::string b = slurp(d + "/model.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    const json h = json::parse(b.substr(8, n));
    const uint64_t off = 8 + n + h["model.layers.3.self_attn.v_proj.weight"]["data_offsets"][0].get<uint64_t>();
    const float v = std::string(bad) == "nan" ? std::nanf("") : -INFINITY;
    std::memcpy(b.data() + off + 4 * 17, &v, 4);
    spit(d + "/model.safetensors", b);
    for (const char* p : {"int8", "fp32", "fp16", "bf16"})
      expect_clean_error({"info", "-m", d, "--precision", p}, "v_proj.weight");
  }
}

TEST_F(Cli, BadOptions) {
  // Bad option values (bad files and texts are rows of tests/test_bad_input_matrix.cpp).
  const std::string f = text_file("t.txt", "Once upon a time there was a cat.");
  expect_clean_error({"info", "-m", kStories, "--precision", "fp8"}, "fp8");
  expect_clean_error({"generate", "-m", kStories, "--precision", "int4", "-n", "2"}, "int4");
  expect_clean_error({"info", "-m", kStories, "--threshold", "-1"}, "threshold");
  expect_clean_error({"info", "-m", kStories, "--threshold", "abc"}, "threshold");
  expect_clean_error({"perplexity", "-m", kStories, "--text", f, "--ctx", "0"}, "ctx");
  expect_clean_error({"perplexity", "-m", kStories, "--text", f, "--ctx", "100000"}, "ctx");
  expect_clean_error({"info", "-m", kStories, "--device", "tpu"}, "tpu");
  expect_clean_error({"generate", "-m", kStories, "--top-p", "0", "-n", "2"}, "top-p");
  expect_clean_error({"generate", "-m", kStories, "--top-k", "-3", "-n", "2"}, "top-k");
  expect_clean_error({"generate", "-m", kStories, "--temperature", "-1", "-n", "2"}, "temperature");
  expect_clean_error({"generate", "-m", kStories, "-n", "-5"});
  expect_clean_error({"generate", "-m", kStories, "--greedy", "--seed", "3"});
  expect_clean_error({"info"}, "model");             // -m is required
  expect_clean_error({"frobnicate"});                // unknown subcommand
  expect_clean_error({"tokenize", "-m", kStories});  // neither --text nor -p
  // usage errors exit 2, runtime errors exit 1
  EXPECT_EQ(run_cli({"info"}).exit_code, 2);
  EXPECT_EQ(run_cli({"info", "-m", tmp + "/nope"}).exit_code, 1);
}

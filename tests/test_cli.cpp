// The llmint8 command-line tool, run as a separate process (LLMINT8_CLI): reference outputs on
// stories260K, JSON contracts, and bad inputs -- each must end with exit code != 0 and exactly one
// stderr line "llmint8: error: ...", never a signal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <functional>
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
  void edit_config(const std::string& dir, const std::function<void(json&)>& f) {
    json c = json::parse(slurp(dir + "/config.json"));
    f(c);
    spit(dir + "/config.json", c.dump(2));
  }
  // Rewrites the safetensors header in place, padded with spaces to its old length so that
  // every data offset stays valid.
  void edit_header(const std::string& dir, const std::function<void(json&)>& f) {
    std::string b = slurp(dir + "/model.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    json h = json::parse(b.substr(8, n));
    f(h);
    std::string s = h.dump();
    ASSERT_LE(s.size(), n) << "edited header grew";
    s.resize(n, ' ');
    b.replace(8, n, s);
    spit(dir + "/model.safetensors", b);
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

TEST_F(Cli, BadModelDirectories) {
  expect_clean_error({"info", "-m", tmp + "/does-not-exist"}, "does-not-exist");
  expect_clean_error({"generate", "-m", tmp + "/does-not-exist", "-n", "2"}, "does-not-exist");

  const std::string no_config = copy_model("no_config");
  fs::remove(no_config + "/config.json");
  expect_clean_error({"info", "-m", no_config}, "config.json");
  expect_clean_error({"generate", "-m", no_config, "-n", "2"}, "config.json");

  const std::string bad_json = copy_model("bad_json");
  spit(bad_json + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,");
  expect_clean_error({"info", "-m", bad_json}, "config.json");

  const std::string unknown_arch = copy_model("unknown_arch");
  edit_config(unknown_arch, [](json& c) {
    c["architectures"] = {"FrobnicatorForCausalLM"};
    c["model_type"] = "frobnicator";
  });
  expect_clean_error({"info", "-m", unknown_arch}, "Frobnicator");

  const std::string bad_heads = copy_model("bad_heads");
  edit_config(bad_heads, [](json& c) {
    c.erase("head_dim");
    c["num_attention_heads"] = 7;  // 64 % 7 != 0
  });
  expect_clean_error({"info", "-m", bad_heads});
  expect_clean_error({"generate", "-m", bad_heads, "-n", "2"});

  const std::string bad_kv = copy_model("bad_kv");
  edit_config(bad_kv, [](json& c) { c["num_key_value_heads"] = 3; });  // 8 % 3 != 0
  expect_clean_error({"info", "-m", bad_kv});
}

TEST_F(Cli, BadSafetensors) {
  const std::string trunc = copy_model("truncated");
  {
    const std::string b = slurp(trunc + "/model.safetensors");
    spit(trunc + "/model.safetensors", b.substr(0, b.size() / 2));
  }
  expect_clean_error({"info", "-m", trunc}, "model.safetensors");
  expect_clean_error({"generate", "-m", trunc, "-n", "2"}, "model.safetensors");

  const std::string tiny = copy_model("tiny");
  spit(tiny + "/model.safetensors", "abc");
  expect_clean_error({"info", "-m", tiny}, "model.safetensors");

  const std::string lying = copy_model("lying_header");
  {
    std::string b = slurp(lying + "/model.safetensors");
    const uint64_t n = b.size() + 1000;
    std::memcpy(b.data(), &n, 8);
    spit(lying + "/model.safetensors", b);
  }
  expect_clean_error({"info", "-m", lying}, "model.safetensors");

  const std::string huge = copy_model("huge_header");
  {
    std::string b = slurp(huge + "/model.safetensors");
    const uint64_t n = ~uint64_t(0) - 4;  // overflows any offset arithmetic
    std::memcpy(b.data(), &n, 8);
    spit(huge + "/model.safetensors", b);
  }
  expect_clean_error({"info", "-m", huge}, "model.safetensors");

  const std::string missing = copy_model("missing_tensor");
  edit_header(missing, [](json& h) {
    // renamed (not deleted) so the file stays valid and only the loader can notice
    h["model.layers.0.mlp.down_proj.weigh"] = h["model.layers.0.mlp.down_proj.weight"];
    h.erase("model.layers.0.mlp.down_proj.weight");
  });
  expect_clean_error({"info", "-m", missing}, "down_proj");
  expect_clean_error({"generate", "-m", missing, "-n", "2"}, "down_proj");

  const std::string shape = copy_model("wrong_shape");
  edit_header(shape, [](json& h) { h["model.layers.2.mlp.down_proj.weight"]["shape"] = {172, 64}; });
  expect_clean_error({"info", "-m", shape}, "down_proj");

  const std::string bad_off = copy_model("bad_offsets");
  edit_header(bad_off, [](json& h) {
    h["model.layers.1.self_attn.q_proj.weight"]["data_offsets"] = {0, 16384};  // overlaps embed_tokens
  });
  expect_clean_error({"info", "-m", bad_off}, "model.safetensors");

  // NaN and Inf weights: the file is well formed, the values are not (every precision refuses).
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
    for (const char* p : {"int8", "fp32", "fp16"})
      expect_clean_error({"info", "-m", d, "--precision", p}, "v_proj.weight");
    expect_clean_error({"quantize", "-m", d, "-o", tmp + "/q_" + bad}, "v_proj.weight");
  }
}

TEST_F(Cli, BadTokenizers) {
  const std::string none = copy_model("no_tokenizer");
  fs::remove(none + "/tokenizer.json");
  fs::remove(none + "/tokenizer.model");
  expect_clean_error({"generate", "-m", none, "-n", "2"}, "tokenizer");
  expect_clean_error({"tokenize", "-m", none, "-p", "hi"}, "tokenizer");

  const std::string broken = copy_model("broken_tokenizer");
  fs::remove(broken + "/tokenizer.model");
  spit(broken + "/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2");
  expect_clean_error({"generate", "-m", broken, "-n", "2"}, "tokenizer.json");
  expect_clean_error({"tokenize", "-m", broken, "-p", "hi"}, "tokenizer.json");

  const std::string wrong = copy_model("wrong_type_tokenizer");
  fs::remove(wrong + "/tokenizer.model");
  spit(wrong + "/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": 5, \"merges\": \"x\"}}");
  expect_clean_error({"tokenize", "-m", wrong, "-p", "hi"}, "tokenizer.json");
}

TEST_F(Cli, BadOptions) {
  const std::string f = text_file("t.txt", "Once upon a time there was a cat.");
  // Text that is not UTF-8, and a prompt longer than the context: an error and nothing on stdout.
  const std::string not_utf8 = "Once \xff\xfe upon";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"generate", "-m", kStories, "-p", not_utf8, "-n", "2"},
           {"generate", "-m", kStories, "-p", [] { std::string p; for (int i = 0; i < 600; ++i) p += "hello world "; return p; }(), "-n", "2"},
           {"tokenize", "-m", kStories, "--text", text_file("bad.txt", not_utf8)},
           {"perplexity", "-m", kStories, "--text", text_file("bad2.txt", not_utf8), "--ctx", "64"}}) {
    const auto r = expect_clean_error(args);
    EXPECT_EQ(r.out, "") << describe(args, r);
  }
  expect_clean_error({"info", "-m", kStories, "--precision", "fp8"}, "fp8");
  expect_clean_error({"generate", "-m", kStories, "--precision", "int4", "-n", "2"}, "int4");
  expect_clean_error({"info", "-m", kStories, "--threshold", "-1"}, "threshold");
  expect_clean_error({"info", "-m", kStories, "--threshold", "abc"}, "threshold");
  expect_clean_error({"perplexity", "-m", kStories, "--text", f, "--ctx", "0"}, "ctx");
  expect_clean_error({"perplexity", "-m", kStories, "--text", f, "--ctx", "100000"}, "ctx");
  expect_clean_error({"perplexity", "-m", kStories, "--text", tmp + "/missing.txt", "--ctx", "64"}, "missing.txt");
  expect_clean_error({"perplexity", "-m", kStories, "--text", tmp, "--ctx", "64"});  // a directory
  expect_clean_error({"perplexity", "-m", kStories, "--text", text_file("empty.txt", ""), "--ctx", "64"});
  expect_clean_error({"tokenize", "-m", kStories, "--text", tmp + "/missing.txt"}, "missing.txt");
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

// Tokenizers against Hugging Face `tokenizers`' own output (shared/reference/tokenizer_reference.json),
// SentencePiece, hand-computed small cases, and malformed inputs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/tokenizer_impl.h"
#include "llmint8/error.h"
#include "llmint8/tokenizer.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using llmint8::Error;
using llmint8::Tokenizer;
using Ids = std::vector<int32_t>;

namespace {

const std::string kShared = LLMINT8_SHARED_DIR;

#define REQUIRE_SHARED(path)                                                              \
  do {                                                                                    \
    if (!fs::exists(path)) GTEST_SKIP() << "shared data not found: " << (path)            \
                                        << " (set LLMINT8_SHARED_DIR to the shared/ folder)"; \
  } while (0)

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A fresh directory per test under the system temp folder.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("llmint8_tok_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// Index of the first differing element (or the shorter length) for a readable failure.
std::string first_diff(const Ids& a, const Ids& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  std::string s = "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size()) +
                  ", first difference at " + std::to_string(i);
  if (i < a.size() && i < b.size()) s += ": " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
  return s;
}

void check_reference(const std::string& model_dir, const std::string& key) {
  const std::string ref_path = kShared + "/reference/tokenizer_reference.json";
  const json ref = read_json(ref_path);
  auto tok = Tokenizer::load(model_dir);
  int checked = 0;
  for (const auto& [name, entry] : ref.items()) {
    if (!entry.contains(key)) continue;
    const std::string text = entry.at("text").get<std::string>();
    const Ids want = entry.at(key).get<Ids>();
    const Ids got = tok->encode(text);
    EXPECT_EQ(got, want) << name << ": " << first_diff(got, want);
    ++checked;
  }
  EXPECT_GE(checked, 2) << "reference file has fewer texts than expected";
}

}  // namespace

// ---- reference ids from Hugging Face tokenizers ---------------------------------------------

TEST(TokenizerReference, Gpt2MatchesHuggingFaceExactly) {
  REQUIRE_SHARED(kShared + "/reference/tokenizer_reference.json");
  REQUIRE_SHARED(kShared + "/models/gpt2-tokenizer/tokenizer.json");
  check_reference(kShared + "/models/gpt2-tokenizer", "gpt2_ids");
}

TEST(TokenizerReference, Stories260KMatchesHuggingFaceExactly) {
  REQUIRE_SHARED(kShared + "/reference/tokenizer_reference.json");
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.json");
  check_reference(kShared + "/models/stories260K", "stories260K_ids");
}

TEST(TokenizerReference, RoundTripReferenceTexts) {
  REQUIRE_SHARED(kShared + "/reference/tokenizer_reference.json");
  REQUIRE_SHARED(kShared + "/models/gpt2-tokenizer/tokenizer.json");
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.json");
  const json ref = read_json(kShared + "/reference/tokenizer_reference.json");
  auto gpt2 = Tokenizer::load(kShared + "/models/gpt2-tokenizer");
  auto stories = Tokenizer::load(kShared + "/models/stories260K");
  for (const auto& [name, entry] : ref.items()) {
    const std::string text = entry.at("text").get<std::string>();
    // GPT-2 is byte-level: exact, including the literal <|endoftext|> when specials are kept.
    EXPECT_EQ(gpt2->decode(gpt2->encode(text), false), text) << name;
    // Byte fallback makes the SentencePiece-style BPE lossless too; BOS is skipped.
    EXPECT_EQ(stories->decode(stories->encode(text), true), text) << name;
  }
}

TEST(TokenizerReference, Gpt2SpecialIdsAndDecode) {
  REQUIRE_SHARED(kShared + "/models/gpt2-tokenizer/tokenizer.json");
  auto tok = Tokenizer::load(kShared + "/models/gpt2-tokenizer");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->bos_id(), 50256);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->id_to_token(50256), "<|endoftext|>");
  EXPECT_EQ(tok->token_to_id("<|endoftext|>"), 50256);
  EXPECT_EQ(tok->token_to_id("\xC4\xA0the"), 262);  // "Ġthe"
  EXPECT_EQ(tok->token_to_id("no such token"), -1);
  // GPT-2 adds nothing, with or without add_special_tokens.
  EXPECT_EQ(tok->encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(tok->encode("Hello world", false), (Ids{15496, 995}));
  const Ids ids{15496, 995, 50256};
  EXPECT_EQ(tok->decode(ids, true), "Hello world");
  EXPECT_EQ(tok->decode(ids, false), "Hello world<|endoftext|>");
}

TEST(TokenizerReference, Stories260KSpecialIds) {
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.json");
  auto tok = Tokenizer::load(kShared + "/models/stories260K");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const Ids with = tok->encode("Once upon a time");
  const Ids without = tok->encode("Once upon a time", false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(with[0], 1);
  EXPECT_EQ(Ids(with.begin() + 1, with.end()), without);
  EXPECT_EQ(tok->decode(with, false), "<s> Once upon a time");
  EXPECT_EQ(tok->decode(with, true), "Once upon a time");
}

// ---- SentencePiece tokenizer.model ---------------------------------------------------------

TEST(TokenizerSentencePiece, Llama2HelloWorld) {
  REQUIRE_SHARED(kShared + "/models/llama2-tokenizer/tokenizer.model");
  auto tok = Tokenizer::load(kShared + "/models/llama2-tokenizer");
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const Ids ids = tok->encode("Hello world");
  EXPECT_EQ(ids, (Ids{1, 15043, 3186}));
  EXPECT_EQ(tok->encode("Hello world", false), (Ids{15043, 3186}));
  EXPECT_EQ(tok->decode(ids, true), "Hello world");
  EXPECT_EQ(tok->id_to_token(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(tok->token_to_id("\xE2\x96\x81Hello"), 15043);
  EXPECT_EQ(tok->token_to_id("<unk>"), 0);
  EXPECT_EQ(tok->token_to_id("no such piece"), -1);
}

TEST(TokenizerSentencePiece, Stories260KModelAgreesWithTokenizerJson) {
  REQUIRE_SHARED(kShared + "/reference/tokenizer_reference.json");
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.model");
  const std::string dir = kShared + "/models/stories260K";
  auto sp = llmint8::io::load_sentencepiece_model(dir + "/tokenizer.model", dir);
  auto hf = Tokenizer::load(dir);
  EXPECT_EQ(sp->vocab_size(), hf->vocab_size());
  EXPECT_EQ(sp->bos_id(), 1);
  EXPECT_EQ(sp->eos_id(), 2);
  const json ref = read_json(kShared + "/reference/tokenizer_reference.json");
  for (const auto& [name, entry] : ref.items()) {
    const std::string text = entry.at("text").get<std::string>();
    const Ids a = sp->encode(text), b = hf->encode(text);
    EXPECT_EQ(a, b) << name << ": " << first_diff(a, b);
    EXPECT_EQ(a, entry.at("stories260K_ids").get<Ids>()) << name;
    EXPECT_EQ(sp->decode(a, true), text) << name;
  }
}

// ---- a hand-written SentencePiece-style tokenizer.json -------------------------------------

namespace {

// Llama-style: Prepend/Replace normalizer, byte fallback (only the bytes of U+20AC), fused unk,
// a [BOS, $A] template; added tokens with lstrip/rstrip, single_word, and a non-special one.
json small_llama_json() {
  const std::string sp = "\xE2\x96\x81";  // U+2581
  json vocab = {{"<unk>", 0}, {"<s>", 1},  {"</s>", 2},    {"<0xE2>", 3},  {"<0x82>", 4},
                {"<0xAC>", 5}, {sp, 6},    {"a", 7},       {"b", 8},       {"c", 9},
                {sp + "a", 10}, {"ab", 11}, {sp + "ab", 12}, {"<mask>", 13}, {"<sep>", 14},
                {"[w]", 15}};
  json added = json::array();
  const auto add = [&](int id, const char* s, bool special, bool lstrip, bool rstrip, bool single) {
    added.push_back({{"id", id}, {"content", s}, {"single_word", single}, {"lstrip", lstrip},
                     {"rstrip", rstrip}, {"normalized", false}, {"special", special}});
  };
  add(0, "<unk>", true, false, false, false);
  add(1, "<s>", true, false, false, false);
  add(2, "</s>", true, false, false, false);
  add(13, "<mask>", true, true, true, false);
  add(14, "<sep>", false, false, false, false);
  add(15, "[w]", true, false, false, true);
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", sp}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        // (a,b) first, then (▁,a), then (▁,ab): "▁ab" must come out of a-b first.
        {"merges", json::array({json::array({"a", "b"}), json::array({sp, "a"}), json::array({sp, "ab"})})}}}};
}

std::unique_ptr<Tokenizer> load_json(const TempDir& d, const json& j) {
  write_file(d.path() / "tokenizer.json", j.dump());
  return Tokenizer::load(d.str());
}

}  // namespace

TEST(TokenizerSmall, AddedTokensStripAndByteFallback) {
  TempDir d;
  auto tok = load_json(d, small_llama_json());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->vocab_size(), 16);
  // <mask> swallows the spaces on both sides (lstrip/rstrip); U+20AC falls back to its 3 bytes.
  const Ids ids = tok->encode("ab <mask> ab\xE2\x82\xAC" "c");
  EXPECT_EQ(ids, (Ids{1, 12, 13, 12, 3, 4, 5, 9}));
  EXPECT_EQ(tok->decode(ids, true), "ab ab\xE2\x82\xAC" "c");
  EXPECT_EQ(tok->decode(ids, false), "<s> ab<mask> ab\xE2\x82\xAC" "c");
  // Without stripping the spaces would be pieces of their own: "ab ", "<mask>", " ab".
  // A non-special added token, kept by skip_special_tokens; each side is normalized separately.
  const Ids sep = tok->encode("a<sep>b", false);
  EXPECT_EQ(sep, (Ids{10, 14, 6, 8}));
  EXPECT_EQ(tok->decode(sep, true), "a<sep> b");
  // Characters with neither a token nor byte tokens: consecutive ones fuse into one <unk>.
  EXPECT_EQ(tok->encode("a\xC3\xA7\xC3\xA7", false), (Ids{10, 0}));
  EXPECT_EQ(tok->encode("a\xC3\xA7" "b", false), (Ids{10, 0, 8}));
  // single_word: "[w]" right after a letter is not a word of its own, the second one is.
  EXPECT_EQ(tok->encode("a[w] [w]", false), (Ids{10, 0, 6, 15}));
  // Invalid byte-fallback sequences decode to one U+FFFD per byte.
  EXPECT_EQ(tok->decode(Ids{3, 9}, true), "\xEF\xBF\xBD" "c");
  // Unknown ids are skipped.
  EXPECT_EQ(tok->decode(Ids{7, 999, -1, 8}, true), "ab");
}

TEST(TokenizerSmall, MetaspacePrependSchemes) {
  TempDir d;
  json j = small_llama_json();
  const std::string sp = "\xE2\x96\x81";
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"}, {"split", false}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"}, {"split", false}};
  auto first = load_json(d, j);
  // Only the piece at the very start of the input gets the prefix.
  EXPECT_EQ(first->encode("a<sep>a", false), (Ids{10, 14, 7}));
  EXPECT_EQ(first->encode("<sep>a", false), (Ids{14, 7}));
  EXPECT_EQ(first->encode("ab ab", false), (Ids{12, 12}));
  EXPECT_EQ(first->decode(Ids{12, 12}, true), "ab ab");
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  j["pre_tokenizer"]["split"] = true;
  auto always = load_json(d, j);
  EXPECT_EQ(always->encode("a<sep>a", false), (Ids{10, 14, 10}));
  EXPECT_EQ(always->encode("ab  ab", false), (Ids{12, 6, 12}));
}

TEST(TokenizerSmall, ByteLevelWithSplitAndNfc) {
  // A byte-level tokenizer in Qwen2's shape: NFC, Split(regex) + ByteLevel(use_regex=false).
  TempDir d;
  json vocab = json::object();
  int n = 0;
  for (int c = 0x21; c <= 0x7E; ++c) vocab[std::string(1, static_cast<char>(c))] = n++;
  vocab["\xC4\xA0"] = n++;  // 'Ġ' = the byte-level space
  const int sp_id = n - 1;
  vocab["\xC3\xA9"] = n++;  // 'é' is not byte-level of é: its bytes C3 A9 map to 'Ã' '©'
  vocab["\xC3\x83"] = n++;  // 'Ã'
  vocab["\xC2\xA9"] = n++;  // '©'
  vocab["\xC3\x83\xC2\xA9"] = n++;
  vocab["\xC4\xA0" "a"] = n++;
  const json j = {
      {"added_tokens", {{{"id", n}, {"content", "<|im_end|>"}, {"special", true}, {"normalized", false},
                         {"lstrip", false}, {"rstrip", false}, {"single_word", false}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", R"( ?\p{L}+|\s+(?!\S)|\s+)"}}}, {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"ignore_merges", false},
        {"merges", {"\xC3\x83 \xC2\xA9", "\xC4\xA0 a"}}}}};
  auto tok = load_json(d, j);
  const int a = vocab["a"], e = vocab["\xC3\x83\xC2\xA9"], sp_a = vocab["\xC4\xA0" "a"];
  // NFC composes "e" + U+0301 into U+00E9 (bytes C3 A9 -> 'Ã' '©', merged); without it the
  // combining mark would be a piece of its own. " a" merges into "Ġa".
  EXPECT_EQ(tok->encode("a e\xCC\x81 a"), (Ids{a, sp_id, e, sp_a}));
  EXPECT_EQ(tok->decode(tok->encode("a e\xCC\x81 a")), "a \xC3\xA9 a");
  // Byte-level characters without a token and no unk_token are dropped, as in `tokenizers`.
  EXPECT_EQ(tok->encode("a\x01"), (Ids{a}));
  EXPECT_EQ(tok->encode("a<|im_end|>"), (Ids{a, n}));
  EXPECT_EQ(tok->decode(Ids{a, n}, true), "a");
  EXPECT_EQ(tok->decode(Ids{a, n}, false), "a<|im_end|>");
  EXPECT_EQ(tok->eos_id(), -1);  // no config files and no conventional EOS name
}

// ---- malformed input -----------------------------------------------------------------------

namespace {
// Runs f, expects an Error whose message mentions `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no Error thrown (expected one mentioning '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "multi-line: " << e.what();
  }
}
}  // namespace

TEST(TokenizerErrors, MissingDirectoryAndFiles) {
  expect_error([] { Tokenizer::load("/nonexistent/llmint8_tok"); }, "/nonexistent/llmint8_tok");
  TempDir d;
  expect_error([&] { Tokenizer::load(d.str()); }, d.str());
}

TEST(TokenizerErrors, BrokenJson) {
  TempDir d;
  write_file(d.path() / "tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  expect_error([&] { Tokenizer::load(d.str()); }, (d.path() / "tokenizer.json").string());
}

TEST(TokenizerErrors, TruncatedTokenizerJson) {
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.json");
  TempDir d;
  const std::string full = read_bytes(kShared + "/models/stories260K/tokenizer.json");
  write_file(d.path() / "tokenizer.json", full.substr(0, full.size() / 2));
  expect_error([&] { Tokenizer::load(d.str()); }, (d.path() / "tokenizer.json").string());
}

TEST(TokenizerErrors, TruncatedTokenizerModel) {
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.model");
  TempDir d;
  const std::string full = read_bytes(kShared + "/models/stories260K/tokenizer.model");
  write_file(d.path() / "tokenizer.model", full.substr(0, full.size() / 2));
  expect_error([&] { Tokenizer::load(d.str()); }, (d.path() / "tokenizer.model").string());
  write_file(d.path() / "tokenizer.model", "");
  expect_error([&] { Tokenizer::load(d.str()); }, (d.path() / "tokenizer.model").string());
}

TEST(TokenizerErrors, UnsupportedModelType) {
  TempDir d;
  json j = small_llama_json();
  j["model"] = {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", {{"[UNK]", 0}}}};
  expect_error([&] { load_json(d, j); }, "unsupported tokenizer model type 'WordPiece'");
  j["model"]["type"] = "Unigram";
  expect_error([&] { load_json(d, j); }, "unsupported tokenizer model type 'Unigram'");
  j = small_llama_json();
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  expect_error([&] { load_json(d, j); }, "unsupported pre_tokenizer type 'BertPreTokenizer'");
}

TEST(TokenizerErrors, BadVocabAndMerges) {
  TempDir d;
  const std::string file = (d.path() / "tokenizer.json").string();
  json j = small_llama_json();
  j["model"]["merges"].push_back(json::array({"a", "zz"}));
  expect_error([&] { load_json(d, j); }, "unknown token 'zz'");
  j = small_llama_json();
  j["model"]["merges"].push_back(json::array({"b", "c"}));  // "bc" is not in the vocabulary
  expect_error([&] { load_json(d, j); }, "unknown token 'bc'");
  j = small_llama_json();
  j["model"]["merges"].push_back("a b c");
  expect_error([&] { load_json(d, j); }, file);
  j = small_llama_json();
  j["model"]["vocab"]["zz"] = 7;  // duplicate of "a"
  expect_error([&] { load_json(d, j); }, "is used by both");
  j = small_llama_json();
  j["model"]["vocab"]["zz"] = 1000000;
  expect_error([&] { load_json(d, j); }, "out of range");
  j = small_llama_json();
  j["model"]["vocab"]["zz"] = -3;
  expect_error([&] { load_json(d, j); }, "out of range");
  j = small_llama_json();
  j["model"]["vocab"]["zz"] = "x";
  expect_error([&] { load_json(d, j); }, file);
  j = small_llama_json();
  j["model"].erase("vocab");
  expect_error([&] { load_json(d, j); }, file);
  j = small_llama_json();
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {5000};
  expect_error([&] { load_json(d, j); }, file);
  j = small_llama_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error([&] { load_json(d, j); }, file);
}

TEST(TokenizerErrors, InvalidUtf8Input) {
  TempDir d;
  auto tok = load_json(d, small_llama_json());
  expect_error([&] { tok->encode("a\xFF" "b"); }, "UTF-8");
}

// ---- family-shaped fixtures made by tools/make_tokenizer_fixtures.py -------------------------
// Small tokenizer.json files in the shapes of Qwen2, Llama-3 (ignore_merges), BLOOM, GPT-NeoX
// (NFC, add_prefix_space), OPT, Llama (Prepend/Replace), Mistral (Metaspace "first") and a
// Metaspace-split + Digits + NFKC/Lowercase one, each with the ids and decodes that Hugging Face
// `tokenizers` gave for random stress texts.

TEST(TokenizerFamilies, MatchHuggingFaceOnStressTexts) {
  const char* env = std::getenv("LLMINT8_TOKENIZER_FIXTURES");
  const std::string dir = env ? env : std::string(LLMINT8_SOURCE_DIR) + "/tests/data/tokenizers";
  if (!fs::exists(dir + "/cases.json")) GTEST_SKIP() << "no fixtures at " << dir;
  const json cases = read_json(dir + "/cases.json");
  ASSERT_GE(cases.size(), 8u);
  for (const auto& [name, entries] : cases.items()) {
    auto tok = Tokenizer::load(dir + "/" + name);
    int bad = 0;
    for (const json& e : entries) {
      const std::string text = e.at("text").get<std::string>();
      const Ids ids = e.at("ids").get<Ids>();
      const Ids got = tok->encode(text);
      const Ids got_ns = tok->encode(text, false);
      const std::string skip = tok->decode(ids, true), keep = tok->decode(ids, false);
      // The generator leaves out fields equal to another one.
      const Ids want_ns = e.contains("ids_no_special") ? e["ids_no_special"].get<Ids>() : ids;
      const std::string want_skip = e.at("decode_skip").get<std::string>();
      const std::string want_keep = e.contains("decode_keep") ? e["decode_keep"].get<std::string>() : want_skip;
      const bool ok = got == ids && got_ns == want_ns && skip == want_skip && keep == want_keep;
      if (!ok && bad++ < 3) {
        ADD_FAILURE() << name << " text " << json(text).dump() << "\n encode: " << first_diff(got, ids)
                      << "\n no-special: " << first_diff(got_ns, want_ns)
                      << "\n decode(skip): " << json(skip).dump() << " vs " << json(want_skip).dump()
                      << "\n decode(keep): " << json(keep).dump() << " vs " << json(want_keep).dump();
      }
    }
    EXPECT_EQ(bad, 0) << name << ": " << bad << " of " << entries.size() << " texts differ";
  }
}

TEST(TokenizerErrors, FallsBackToTokenizerModelWhenJsonDoesNotLoad) {
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.model");
  TempDir d;
  json j = small_llama_json();
  j["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  write_file(d.path() / "tokenizer.json", j.dump());
  const std::string model = read_bytes(kShared + "/models/stories260K/tokenizer.model");
  write_file(d.path() / "tokenizer.model", model);
  auto tok = Tokenizer::load(d.str());
  auto ref = Tokenizer::load(kShared + "/models/stories260K");
  EXPECT_EQ(tok->encode("Once upon a time"), ref->encode("Once upon a time"));
  // Neither loads: both problems are named.
  write_file(d.path() / "tokenizer.model", model.substr(0, model.size() / 3));
  expect_error([&] { Tokenizer::load(d.str()); }, "unsupported tokenizer model type 'Unigram'");
  expect_error([&] { Tokenizer::load(d.str()); }, (d.path() / "tokenizer.model").string());
}

TEST(TokenizerSentencePiece, Stories260KModelAgreesWithTokenizerJsonOnWikiText) {
  const std::string wiki = kShared + "/data/wikitext-2/wiki.test.raw";
  REQUIRE_SHARED(wiki);
  REQUIRE_SHARED(kShared + "/models/stories260K/tokenizer.model");
  const std::string dir = kShared + "/models/stories260K";
  auto sp = llmint8::io::load_sentencepiece_model(dir + "/tokenizer.model", dir);
  auto hf = Tokenizer::load(dir);
  const std::string text = read_bytes(wiki);
  // Line by line (as evaluation code feeds it) and one large chunk.
  // Cut at line ends so no UTF-8 sequence is split.
  std::istringstream lines(text.substr(0, text.rfind('\n', 300000)));
  std::string line;
  int n = 0, bad = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (sp->encode(line) != hf->encode(line) && bad++ < 3) ADD_FAILURE() << "line " << n << ": " << line;
  }
  EXPECT_EQ(bad, 0);
  const std::string chunk = text.substr(0, text.rfind('\n', 200000));
  const Ids a = sp->encode(chunk), b = hf->encode(chunk);
  EXPECT_EQ(a, b) << first_diff(a, b);
  EXPECT_EQ(hf->decode(b), chunk);
}

// Every leaf of a valid tokenizer.json replaced by values of the wrong type or range: loading
// either works or throws Error (never another exception, never a crash), and a loaded tokenizer
// encodes and decodes without failing.
TEST(TokenizerErrors, MutatedFieldsGiveErrorOrWork) {
  TempDir d;
  const json base = small_llama_json();
  const json flat = base.flatten();
  const json replacements[] = {nullptr, json(-1), json(int64_t{1} << 40), json("x"), json::array(),
                               json::object(), json(true)};
  int loaded = 0, rejected = 0;
  for (const auto& [pointer, value] : flat.items()) {
    for (const json& r : replacements) {
      json j = base;
      j[json::json_pointer(pointer)] = r;
      std::unique_ptr<Tokenizer> tok;
      try {
        tok = load_json(d, j);
      } catch (const Error& e) {
        ++rejected;
        EXPECT_NE(std::string(e.what()).find("tokenizer"), std::string::npos) << e.what();
        continue;
      }
      ++loaded;
      const Ids ids = tok->encode("ab <mask> c\xE2\x82\xAC [w] x<sep>y");
      (void)tok->decode(ids, true);
      (void)tok->decode(ids, false);
      (void)tok->id_to_token(tok->vocab_size());
    }
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 0);
}

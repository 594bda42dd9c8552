// tokenizer.json with a BPE model, reproducing Hugging Face `tokenizers`' encode/decode:
//   1. added tokens that are not `normalized` are cut out of the raw text (leftmost-longest
//      match, then single_word / lstrip / rstrip as `tokenizers` applies them);
//   2. every other piece goes through the normalizer, then the `normalized` added tokens are cut
//      out of the normalized text;
//   3. the pre-tokenizer splits the remaining pieces into words;
//   4. each word is BPE-merged: its characters (or <0xNN> byte tokens / unk) are merged pairwise,
//      always the adjacent pair of lowest merge rank first (leftmost on ties);
//   5. the post-processor adds the template's special tokens when add_special_tokens is set.
// Decoding maps ids to token strings (skipping special added tokens on request) and runs the
// decoder chain. Only the components the Llama / Mistral / GPT-2 / OPT / NeoX / BLOOM / Qwen2
// families use are implemented; anything else is rejected at load with an "unsupported" Error.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <queue>
#include <unordered_map>

#include "io/read_file.h"
#include "io/tokenizer_impl.h"
#include "io/unicode.h"
#include "llmint8/error.h"

namespace llmint8::io {
namespace {

using json = nlohmann::json;
namespace uc = llmint8::unicode;

// A JSON integer as int64. nlohmann's get<int64_t>() also converts a float, which is undefined
// when the float is outside int64's range ("id": 1e45), so anything but an integer is an Error.
int64_t json_int(const json& v, const std::string& file, const std::string& what) {
  if (!v.is_number_integer())
    throw Error(file + ": " + what + " is not an integer (" + std::string(v.type_name()) + ")");
  return v.get<int64_t>();
}

// A unit of text in the pipeline. Added tokens travel as pieces with their id and are left
// alone by the normalizer, pre-tokenizer and model.
struct Piece {
  std::string text;
  int32_t added_id = -1;
  bool at_origin = false;  // starts at byte 0 of the input (Metaspace prepend_scheme "first")
};
using Pieces = std::vector<Piece>;

// Replaces each non-added piece by f(piece) (a list of sub-pieces); empty pieces are dropped,
// as `tokenizers`' PreTokenizedString::split does.
template <class F>
void split_each(Pieces& ps, F&& f) {
  Pieces out;
  out.reserve(ps.size());
  for (Piece& p : ps) {
    if (p.added_id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    for (Piece& q : f(p))
      if (!q.text.empty()) out.push_back(std::move(q));
  }
  ps = std::move(out);
}

// ---- splitting by delimiters ---------------------------------------------------------------

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& s, const std::string& file) {
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  throw Error(file + ": unsupported split behavior '" + s + "'");
}

struct Seg {
  size_t b, e;
  bool delim;
};

// The delimiter matches plus the text between them, covering [0, n).
std::vector<Seg> segments(size_t n, const std::vector<std::pair<size_t, size_t>>& matches, bool invert) {
  std::vector<Seg> segs;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) segs.push_back({prev, b, invert});
    segs.push_back({b, e, !invert});
    prev = e;
  }
  if (prev < n) segs.push_back({prev, n, invert});
  return segs;
}

// Applies a split behaviour to the segments, as `tokenizers`' NormalizedString::split.
std::vector<std::pair<size_t, size_t>> apply_behavior(const std::vector<Seg>& segs, Behavior beh) {
  std::vector<std::pair<size_t, size_t>> out;
  switch (beh) {
    case Behavior::Removed:
      for (const Seg& s : segs)
        if (!s.delim) out.emplace_back(s.b, s.e);
      break;
    case Behavior::Isolated:
      for (const Seg& s : segs) out.emplace_back(s.b, s.e);
      break;
    case Behavior::MergedWithPrevious: {
      bool prev_delim = false;
      for (const Seg& s : segs) {
        if (s.delim && !prev_delim && !out.empty())
          out.back().second = s.e;
        else
          out.emplace_back(s.b, s.e);
        prev_delim = s.delim;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool next_delim = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->delim && !next_delim && !out.empty())
          out.back().first = it->b;
        else
          out.emplace_back(it->b, it->e);
        next_delim = it->delim;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::Contiguous: {
      bool prev_delim = false;
      for (const Seg& s : segs) {
        if (s.delim == prev_delim && !out.empty())
          out.back().second = s.e;
        else
          out.emplace_back(s.b, s.e);
        prev_delim = s.delim;
      }
      break;
    }
  }
  return out;
}

std::vector<std::pair<size_t, size_t>> find_literal(std::string_view s, std::string_view pat) {
  std::vector<std::pair<size_t, size_t>> m;
  if (pat.empty()) return m;
  for (size_t pos = s.find(pat); pos != std::string_view::npos; pos = s.find(pat, pos + pat.size()))
    m.emplace_back(pos, pos + pat.size());
  return m;
}

// Matches of a predicate on single code points.
template <class Pred>
std::vector<std::pair<size_t, size_t>> find_chars(std::string_view s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> m;
  for (size_t i = 0; i < s.size();) {
    const size_t b = i;
    const char32_t c = uc::next_code_point(s, i);
    if (pred(c)) m.emplace_back(b, i);
  }
  return m;
}

Pieces cut(const Piece& p, const std::vector<std::pair<size_t, size_t>>& ranges) {
  Pieces out;
  out.reserve(ranges.size());
  for (const auto& [b, e] : ranges) out.push_back({p.text.substr(b, e - b), -1, p.at_origin && b == 0});
  return out;
}

// A "pattern" object of tokenizers: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::shared_ptr<uc::Regex> regex;
  std::vector<std::pair<size_t, size_t>> find(std::string_view s) const {
    return regex ? regex->find_all(s) : find_literal(s, literal);
  }
};

Pattern parse_pattern(const json& j, const std::string& file) {
  Pattern p;
  if (j.is_object() && j.contains("String")) {
    p.literal = j.at("String").get<std::string>();
  } else if (j.is_object() && j.contains("Regex")) {
    try {
      p.regex = std::make_shared<uc::Regex>(j.at("Regex").get<std::string>());
    } catch (const Error& e) {
      throw Error(file + ": " + e.what());
    }
  } else {
    throw Error(file + ": pattern must be {\"String\": ..} or {\"Regex\": ..}");
  }
  return p;
}

std::string replace_all(std::string_view s, const Pattern& pat, std::string_view content) {
  std::string out;
  size_t prev = 0;
  for (const auto& [b, e] : pat.find(s)) {
    out.append(s.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(s.substr(prev));
  return out;
}

std::string type_of(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

// ---- normalizers ---------------------------------------------------------------------------

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};
using NormalizerPtr = std::unique_ptr<Normalizer>;

struct SequenceNormalizer : Normalizer {
  std::vector<NormalizerPtr> parts;
  void apply(std::string& s) const override {
    for (const auto& p : parts) p->apply(s);
  }
};
struct PrependNormalizer : Normalizer {
  std::string prefix;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix);
  }
};
struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  void apply(std::string& s) const override { s = replace_all(s, pattern, content); }
};
struct FormNormalizer : Normalizer {
  uc::NormalForm form;
  void apply(std::string& s) const override { s = uc::normalize(s, form); }
};
struct LowercaseNormalizer : Normalizer {
  void apply(std::string& s) const override { s = uc::lowercase(s); }
};
struct StripNormalizer : Normalizer {
  bool left = true, right = true;
  void apply(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left)
      while (b < e) {
        size_t i = b;
        if (!uc::is_whitespace(uc::next_code_point(s, i))) break;
        b = i;
      }
    if (right)
      while (e > b) {
        size_t k = e - 1;
        while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t i = k;
        if (!uc::is_whitespace(uc::next_code_point(s, i))) break;
        e = k;
      }
    s = s.substr(b, e - b);
  }
};

NormalizerPtr parse_normalizer(const json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j);
  if (t == "Sequence") {
    auto n = std::make_unique<SequenceNormalizer>();
    for (const json& c : j.at("normalizers"))
      if (auto p = parse_normalizer(c, file)) n->parts.push_back(std::move(p));
    return n;
  }
  if (t == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prefix = j.at("prepend").get<std::string>();
    return n;
  }
  if (t == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = parse_pattern(j.at("pattern"), file);
    n->content = j.at("content").get<std::string>();
    return n;
  }
  if (t == "NFC" || t == "NFD" || t == "NFKC" || t == "NFKD") {
    auto n = std::make_unique<FormNormalizer>();
    n->form = t == "NFC" ? uc::NormalForm::NFC
              : t == "NFD" ? uc::NormalForm::NFD
              : t == "NFKC" ? uc::NormalForm::NFKC
                            : uc::NormalForm::NFKD;
    return n;
  }
  if (t == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (t == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = j.value("strip_left", true);
    n->right = j.value("strip_right", true);
    return n;
  }
  throw Error(file + ": unsupported normalizer type '" + t + "'");
}

// ---- pre-tokenizers ------------------------------------------------------------------------

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces& ps) const = 0;
};
using PreTokenizerPtr = std::unique_ptr<PreTokenizer>;

struct SequencePre : PreTokenizer {
  std::vector<PreTokenizerPtr> parts;
  void apply(Pieces& ps) const override {
    for (const auto& p : parts) p->apply(ps);
  }
};

// GPT-2's word pattern, as tokenizers' ByteLevel pre-tokenizer uses it.
const uc::Regex& gpt2_regex() {
  static const uc::Regex re(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return re;
}

struct ByteLevelPre : PreTokenizer {
  bool add_prefix_space = true, use_regex = true;
  void apply(Pieces& ps) const override {
    split_each(ps, [&](Piece& p) {
      if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (!use_regex) return Pieces{p};
      return cut(p, apply_behavior(segments(p.text.size(), gpt2_regex().find_all(p.text), false),
                                   Behavior::Isolated));
    });
    const auto& table = uc::byte_to_unicode();
    for (Piece& p : ps) {
      if (p.added_id >= 0) continue;
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped += table[c];
      p.text = std::move(mapped);
    }
  }
};

enum class Prepend { Always, First, Never };

struct MetaspacePre : PreTokenizer {
  std::string replacement = "\xE2\x96\x81";  // U+2581
  Prepend prepend = Prepend::Always;
  bool split = true;
  void apply(Pieces& ps) const override {
    split_each(ps, [&](Piece& p) {
      p.text = replace_all(p.text, Pattern{" ", nullptr}, replacement);
      const bool starts = p.text.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (prepend == Prepend::Always || (prepend == Prepend::First && p.at_origin)))
        p.text.insert(0, replacement);
      if (!split) return Pieces{p};
      return cut(p, apply_behavior(segments(p.text.size(), find_literal(p.text, replacement), false),
                                   Behavior::MergedWithNext));
    });
  }
};

struct SplitPre : PreTokenizer {
  Pattern pattern;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void apply(Pieces& ps) const override {
    split_each(ps, [&](Piece& p) {
      return cut(p, apply_behavior(segments(p.text.size(), pattern.find(p.text), invert), behavior));
    });
  }
};

struct DigitsPre : PreTokenizer {
  bool individual = false;
  void apply(Pieces& ps) const override {
    split_each(ps, [&](Piece& p) {
      return cut(p, apply_behavior(segments(p.text.size(), find_chars(p.text, uc::is_numeric), false),
                                   individual ? Behavior::Isolated : Behavior::Contiguous));
    });
  }
};

struct WhitespaceSplitPre : PreTokenizer {
  void apply(Pieces& ps) const override {
    split_each(ps, [&](Piece& p) {
      return cut(p, apply_behavior(segments(p.text.size(), find_chars(p.text, uc::is_whitespace), false),
                                   Behavior::Removed));
    });
  }
};

struct PunctuationPre : PreTokenizer {
  Behavior behavior = Behavior::Isolated;
  void apply(Pieces& ps) const override {
    split_each(ps, [&](Piece& p) {
      return cut(p, apply_behavior(segments(p.text.size(), find_chars(p.text, uc::is_punctuation), false),
                                   behavior));
    });
  }
};

Prepend parse_prepend_scheme(const json& j, const std::string& file) {
  if (j.contains("prepend_scheme")) {
    const std::string s = j.at("prepend_scheme").get<std::string>();
    if (s == "always") return Prepend::Always;
    if (s == "first") return Prepend::First;
    if (s == "never") return Prepend::Never;
    throw Error(file + ": unknown Metaspace prepend_scheme '" + s + "'");
  }
  return j.value("add_prefix_space", true) ? Prepend::Always : Prepend::Never;  // older files
}

PreTokenizerPtr parse_pre_tokenizer(const json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j);
  if (t == "Sequence") {
    auto p = std::make_unique<SequencePre>();
    for (const json& c : j.at("pretokenizers"))
      if (auto q = parse_pre_tokenizer(c, file)) p->parts.push_back(std::move(q));
    return p;
  }
  if (t == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPre>();
    p->add_prefix_space = j.value("add_prefix_space", true);
    p->use_regex = j.value("use_regex", true);
    return p;
  }
  if (t == "Metaspace") {
    auto p = std::make_unique<MetaspacePre>();
    p->replacement = j.value("replacement", p->replacement);
    p->prepend = parse_prepend_scheme(j, file);
    p->split = j.value("split", true);
    return p;
  }
  if (t == "Split") {
    auto p = std::make_unique<SplitPre>();
    p->pattern = parse_pattern(j.at("pattern"), file);
    p->behavior = parse_behavior(j.at("behavior").get<std::string>(), file);
    p->invert = j.value("invert", false);
    return p;
  }
  if (t == "Digits") {
    auto p = std::make_unique<DigitsPre>();
    p->individual = j.value("individual_digits", false);
    return p;
  }
  if (t == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPre>();
  if (t == "Whitespace") {
    auto p = std::make_unique<SplitPre>();
    p->pattern.regex = std::make_shared<uc::Regex>(R"(\w+|[^\w\s]+)");
    p->behavior = Behavior::Removed;
    p->invert = true;
    return p;
  }
  if (t == "Punctuation") {
    auto p = std::make_unique<PunctuationPre>();
    p->behavior = parse_behavior(j.value("behavior", std::string("Isolated")), file);
    return p;
  }
  throw Error(file + ": unsupported pre_tokenizer type '" + t + "'");
}

// ---- decoders ------------------------------------------------------------------------------

using Tokens = std::vector<std::string>;

struct Decoder {
  virtual ~Decoder() = default;
  virtual Tokens apply(Tokens toks) const = 0;
};
using DecoderPtr = std::unique_ptr<Decoder>;

struct SequenceDecoder : Decoder {
  std::vector<DecoderPtr> parts;
  Tokens apply(Tokens toks) const override {
    for (const auto& p : parts) toks = p->apply(std::move(toks));
    return toks;
  }
};

// Characters back to bytes; a token holding a character outside the table keeps its raw bytes.
struct ByteLevelDecoder : Decoder {
  Tokens apply(Tokens toks) const override {
    std::string bytes;
    for (const std::string& t : toks) {
      std::string b;
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        const int v = uc::unicode_to_byte(uc::next_code_point(t, i));
        if (v < 0) ok = false;
        else b += static_cast<char>(v);
      }
      bytes += ok ? b : t;
    }
    return {uc::lossy_utf8(bytes)};
  }
};

struct ReplaceDecoder : Decoder {
  Pattern pattern;
  std::string content;
  Tokens apply(Tokens toks) const override {
    for (auto& t : toks) t = replace_all(t, pattern, content);
    return toks;
  }
};

// Runs of <0xNN> tokens become their bytes when these form valid UTF-8, else one U+FFFD per byte.
struct ByteFallbackDecoder : Decoder {
  static int byte_of(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
      const char c = t[k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else return -1;
    }
    return v;
  }
  Tokens apply(Tokens toks) const override {
    Tokens out;
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (uc::is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : toks) {
      const int b = byte_of(t);
      if (b >= 0) {
        pending += static_cast<char>(b);
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

struct FuseDecoder : Decoder {
  Tokens apply(Tokens toks) const override {
    std::string all;
    for (const auto& t : toks) all += t;
    return {all};
  }
};

// Removes up to `start` leading and `stop` trailing copies of `content` from each token.
struct StripDecoder : Decoder {
  std::string content = " ";
  size_t start = 0, stop = 0;
  Tokens apply(Tokens toks) const override {
    if (content.empty()) return toks;
    for (auto& t : toks) {
      size_t b = 0, e = t.size();
      for (size_t k = 0; k < start && t.compare(b, content.size(), content) == 0 && b < e; ++k)
        b += content.size();
      for (size_t k = 0; k < stop && e >= b + content.size() &&
                         t.compare(e - content.size(), content.size(), content) == 0;
           ++k)
        e -= content.size();
      t = t.substr(b, e - b);
    }
    return toks;
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement = "\xE2\x96\x81";
  bool prepend = true;
  Tokens apply(Tokens toks) const override {
    for (size_t i = 0; i < toks.size(); ++i)
      toks[i] = replace_all(toks[i], Pattern{replacement, nullptr}, i == 0 && prepend ? "" : " ");
    return toks;
  }
};

DecoderPtr parse_decoder(const json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j);
  if (t == "Sequence") {
    auto d = std::make_unique<SequenceDecoder>();
    for (const json& c : j.at("decoders"))
      if (auto q = parse_decoder(c, file)) d->parts.push_back(std::move(q));
    return d;
  }
  if (t == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (t == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->pattern = parse_pattern(j.at("pattern"), file);
    d->content = j.at("content").get<std::string>();
    return d;
  }
  if (t == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (t == "Fuse") return std::make_unique<FuseDecoder>();
  if (t == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = j.value("content", std::string(" "));
    const auto count = [&](const char* k) {
      return j.contains(k) ? json_int(j.at(k), file, std::string("Strip decoder ") + k) : int64_t{0};
    };
    const auto start = count("start"), stop = count("stop");
    if (start < 0 || stop < 0) throw Error(file + ": Strip decoder with a negative count");
    d->start = static_cast<size_t>(start);
    d->stop = static_cast<size_t>(stop);
    return d;
  }
  if (t == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    d->replacement = j.value("replacement", d->replacement);
    d->prepend = parse_prepend_scheme(j, file) != Prepend::Never;
    return d;
  }
  throw Error(file + ": unsupported decoder type '" + t + "'");
}

// ---- post-processors -----------------------------------------------------------------------

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids) const = 0;
  virtual int32_t leading_special() const { return -1; }  // the id a template puts first, if any
};
using PostProcessorPtr = std::unique_ptr<PostProcessor>;

struct SequencePost : PostProcessor {
  std::vector<PostProcessorPtr> parts;
  void apply(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts) p->apply(ids);
  }
  int32_t leading_special() const override {
    for (const auto& p : parts)
      if (p->leading_special() >= 0) return p->leading_special();
    return -1;
  }
};

// A fixed list of ids before and after the sequence ($A).
struct TemplatePost : PostProcessor {
  std::vector<int32_t> before, after;
  void apply(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  int32_t leading_special() const override { return before.empty() ? -1 : before.front(); }
};

struct NoopPost : PostProcessor {
  void apply(std::vector<int32_t>&) const override {}
};

// ---- the BPE model -------------------------------------------------------------------------

struct BpeModel {
  std::unordered_map<std::string, int32_t> vocab;
  struct Merge {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, Merge> merges;  // (left id << 32 | right id) -> rank, merged id
  int32_t unk = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  std::array<int32_t, 256> byte_ids{};

  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  int32_t find(const std::string& s) const {
    const auto it = vocab.find(s);
    return it == vocab.end() ? -1 : it->second;
  }

  void tokenize(const std::string& w, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (ignore_merges) {
      if (const int32_t id = find(w); id >= 0) {
        out.push_back(id);
        return;
      }
    }
    struct Sym {
      int32_t id;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(w.size());
    const auto push = [&](int32_t id) {
      const auto n = static_cast<int32_t>(syms.size());
      syms.push_back({id, n - 1, n + 1, true});
    };
    bool pending_unk = false;  // `tokenizers` emits an unknown run when the next known char comes
    std::string s;
    for (size_t i = 0; i < w.size();) {
      const size_t n = uc::char_len(w, i);
      s.clear();
      if (i > 0) s += prefix;
      s.append(w, i, n);
      if (i + n == w.size()) s += suffix;
      i += n;
      if (const int32_t id = find(s); id >= 0) {
        if (pending_unk) push(unk), pending_unk = false;
        push(id);
        continue;
      }
      if (byte_fallback &&
          std::all_of(s.begin(), s.end(), [&](char c) { return byte_ids[static_cast<unsigned char>(c)] >= 0; })) {
        for (char c : s) push(byte_ids[static_cast<unsigned char>(c)]);
        continue;
      }
      if (unk < 0) continue;  // no unk token: the character is dropped, as in `tokenizers`
      if (pending_unk && !fuse_unk) push(unk);
      pending_unk = true;
    }
    if (pending_unk) push(unk);
    if (syms.empty()) return;
    syms.back().next = -1;

    struct Cand {
      int32_t rank, pos, id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
    const auto consider = [&](int32_t pos) {
      const int32_t nx = syms[pos].next;
      if (nx < 0) return;
      const auto it = merges.find(key(syms[pos].id, syms[nx].id));
      if (it != merges.end()) q.push({it->second.rank, pos, it->second.id});
    };
    for (int32_t p = 0; p + 1 < static_cast<int32_t>(syms.size()); ++p) consider(p);
    while (!q.empty()) {
      const Cand c = q.top();
      q.pop();
      Sym& a = syms[c.pos];
      if (!a.alive || a.next < 0) continue;
      // Stale entry: the pair at this position changed since it was queued.
      const auto it = merges.find(key(a.id, syms[a.next].id));
      if (it == merges.end() || it->second.rank != c.rank || it->second.id != c.id) continue;
      Sym& b = syms[a.next];
      b.alive = false;
      a.id = c.id;
      a.next = b.next;
      if (b.next >= 0) syms[b.next].prev = c.pos;
      if (a.prev >= 0) consider(a.prev);
      consider(c.pos);
    }
    for (int32_t p = 0; p >= 0; p = syms[p].next) out.push_back(syms[p].id);
  }
};

// ---- the tokenizer -------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Leftmost-longest search for a set of added-token strings (few, so a first-byte index is
// enough).
class AddedMatcher {
 public:
  void add(const std::string& pattern, size_t token_index) {
    if (pattern.empty()) return;
    auto& v = by_first_[static_cast<unsigned char>(pattern[0])];
    v.push_back({pattern, token_index});
    std::stable_sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    empty_ = false;
  }
  bool empty() const { return empty_; }
  struct Match {
    size_t b, e, token;
  };
  std::vector<Match> find(std::string_view s) const {
    std::vector<Match> out;
    if (empty_) return out;
    for (size_t i = 0; i < s.size();) {
      bool hit = false;
      for (const auto& [pat, tok] : by_first_[static_cast<unsigned char>(s[i])]) {
        if (s.compare(i, pat.size(), pat) == 0) {
          out.push_back({i, i + pat.size(), tok});
          i += pat.size();
          hit = true;
          break;
        }
      }
      if (!hit) ++i;
    }
    return out;
  }

 private:
  std::array<std::vector<std::pair<std::string, size_t>>, 256> by_first_;
  bool empty_ = true;
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  HfBpeTokenizer(const json& j, const std::string& file, const std::string& dir);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? id_to_token_[static_cast<size_t>(id)] : std::string();
  }
  int32_t token_to_id(std::string_view token) const override { return token_id(std::string(token)); }

 private:
  // Cuts the matches of `m` out of each non-added piece, honouring single_word/lstrip/rstrip.
  void split_added(Pieces& ps, const AddedMatcher& m) const;
  int32_t token_id(const std::string& s) const;

  std::string file_;
  BpeModel model_;
  std::vector<AddedToken> added_;
  AddedMatcher raw_matcher_, normalized_matcher_;
  NormalizerPtr normalizer_;
  PreTokenizerPtr pre_tokenizer_;
  PostProcessorPtr post_processor_;
  DecoderPtr decoder_;
  std::vector<std::string> id_to_token_;
  std::vector<uint8_t> special_;  // per id: a special added token (skipped by decode on request)
  int32_t bos_ = -1, eos_ = -1;
};

PostProcessorPtr parse_post_processor(const json& j, const std::string& file,
                                      const std::function<int32_t(const std::string&)>& lookup) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j);
  if (t == "Sequence") {
    auto p = std::make_unique<SequencePost>();
    for (const json& c : j.at("processors"))
      if (auto q = parse_post_processor(c, file, lookup)) p->parts.push_back(std::move(q));
    return p;
  }
  if (t == "ByteLevel") return std::make_unique<NoopPost>();  // only adjusts offsets
  if (t == "TemplateProcessing") {
    auto p = std::make_unique<TemplatePost>();
    const json& specials = j.contains("special_tokens") ? j.at("special_tokens") : json::object();
    bool seen_sequence = false;
    for (const json& item : j.at("single")) {
      if (item.contains("Sequence")) {
        if (seen_sequence) throw Error(file + ": TemplateProcessing 'single' has two sequences");
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        if (!specials.contains(name))
          throw Error(file + ": TemplateProcessing refers to undefined special token '" + name + "'");
        for (const json& id : specials.at(name).at("ids")) {
          const auto v = json_int(id, file, "TemplateProcessing id");
          if (v < 0 || v > std::numeric_limits<int32_t>::max())
            throw Error(file + ": TemplateProcessing id " + std::to_string(v) + " is out of range");
          (seen_sequence ? p->after : p->before).push_back(static_cast<int32_t>(v));
        }
      } else {
        throw Error(file + ": TemplateProcessing item is neither Sequence nor SpecialToken");
      }
    }
    return p;
  }
  if (t == "RobertaProcessing" || t == "BertProcessing") {
    auto p = std::make_unique<TemplatePost>();
    const auto pair_id = [&](const char* k) {
      const json& v = j.at(k);
      const auto id = json_int(v.at(1), file, t + " " + k + " id");
      if (id < 0 || id > std::numeric_limits<int32_t>::max())
        throw Error(file + ": " + t + " " + k + " id is out of range");
      return static_cast<int32_t>(id);
    };
    p->before.push_back(pair_id("cls"));
    p->after.push_back(pair_id("sep"));
    return p;
  }
  throw Error(file + ": unsupported post_processor type '" + t + "'");
}

bool get_bool(const json& j, const char* k, bool def) {
  if (!j.contains(k) || j[k].is_null()) return def;
  return j[k].get<bool>();
}
std::string get_str(const json& j, const char* k) {
  if (!j.contains(k) || j[k].is_null()) return "";
  return j[k].get<std::string>();
}

HfBpeTokenizer::HfBpeTokenizer(const json& j, const std::string& file, const std::string& dir)
    : file_(file) {
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw Error(file + ": no \"model\" object");
  const json& m = j["model"];
  std::string type = type_of(m);
  if (type.empty() && m.contains("merges")) type = "BPE";  // early files omit the type
  if (type != "BPE")
    throw Error(file + ": unsupported tokenizer model type '" + type + "' (only BPE is supported)");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0.0)
    throw Error(file + ": BPE dropout is unsupported (it makes encoding random)");
  if (!m.contains("vocab") || !m["vocab"].is_object()) throw Error(file + ": model.vocab is not an object");
  if (!m.contains("merges") || !m["merges"].is_array()) throw Error(file + ": model.merges is not an array");

  const json& added_json = j.contains("added_tokens") && !j["added_tokens"].is_null() ? j["added_tokens"] : json::array();
  if (!added_json.is_array()) throw Error(file + ": added_tokens is not an array");

  // Ids must be unique and dense enough to index a table: below (vocab entries + added tokens).
  const json& vocab = m["vocab"];
  const int64_t limit = static_cast<int64_t>(vocab.size() + added_json.size());
  if (limit > std::numeric_limits<int32_t>::max()) throw Error(file + ": vocabulary too large");
  int64_t max_id = -1;
  std::vector<std::string> names(static_cast<size_t>(limit));
  std::vector<uint8_t> used(static_cast<size_t>(limit), 0);
  model_.vocab.reserve(vocab.size());
  for (const auto& [tok, v] : vocab.items()) {
    if (!v.is_number_integer()) throw Error(file + ": vocab entry '" + tok + "' has a non-integer id");
    const auto id = v.get<int64_t>();
    if (id < 0 || id >= limit)
      throw Error(file + ": vocab id " + std::to_string(id) + " of '" + tok + "' is out of range [0, " +
                  std::to_string(limit) + ")");
    if (used[static_cast<size_t>(id)])
      throw Error(file + ": vocab id " + std::to_string(id) + " is used by both '" +
                  names[static_cast<size_t>(id)] + "' and '" + tok + "'");
    used[static_cast<size_t>(id)] = 1;
    names[static_cast<size_t>(id)] = tok;
    model_.vocab.emplace(tok, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }

  for (const json& a : added_json) {
    AddedToken t;
    t.content = a.at("content").get<std::string>();
    const auto id = json_int(a.at("id"), file, "added token id");
    if (id < 0 || id >= limit)
      throw Error(file + ": added token '" + t.content + "' has id " + std::to_string(id) +
                  " out of range [0, " + std::to_string(limit) + ")");
    t.id = static_cast<int32_t>(id);
    t.special = get_bool(a, "special", false);
    t.lstrip = get_bool(a, "lstrip", false);
    t.rstrip = get_bool(a, "rstrip", false);
    t.single_word = get_bool(a, "single_word", false);
    t.normalized = get_bool(a, "normalized", !t.special);
    for (const auto& b : added_)
      if (b.id == t.id && b.content != t.content)
        throw Error(file + ": added tokens '" + b.content + "' and '" + t.content + "' share id " +
                    std::to_string(id));
    names[static_cast<size_t>(id)] = t.content;
    used[static_cast<size_t>(id)] = 1;
    max_id = std::max(max_id, id);
    added_.push_back(std::move(t));
  }
  id_to_token_.assign(names.begin(), names.begin() + (max_id + 1));
  special_.assign(id_to_token_.size(), 0);
  for (const auto& t : added_)
    if (t.special) special_[static_cast<size_t>(t.id)] = 1;

  // Model options.
  model_.unk = -1;
  if (const std::string unk = get_str(m, "unk_token"); !unk.empty()) {
    model_.unk = model_.find(unk);
    if (model_.unk < 0) throw Error(file + ": unk_token '" + unk + "' is not in the vocabulary");
  }
  model_.fuse_unk = get_bool(m, "fuse_unk", false);
  model_.byte_fallback = get_bool(m, "byte_fallback", false);
  model_.ignore_merges = get_bool(m, "ignore_merges", false);
  model_.prefix = get_str(m, "continuing_subword_prefix");
  model_.suffix = get_str(m, "end_of_word_suffix");
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    model_.byte_ids[static_cast<size_t>(b)] = model_.find(buf);
  }

  // Merges: "a b" strings or [a, b] pairs; rank = position. A repeated pair keeps the later rank,
  // as `tokenizers` builds its map by inserting in order.
  const json& merges = m["merges"];
  model_.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& e = merges[r];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw Error(file + ": merge #" + std::to_string(r) + " '" + s + "' is not two tokens separated by a space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      throw Error(file + ": merge #" + std::to_string(r) + " is neither \"a b\" nor [a, b]");
    }
    const int32_t ia = model_.find(a), ib = model_.find(b), im = model_.find(a + b);
    for (const auto& [id, s] : {std::pair{ia, a}, std::pair{ib, b}, std::pair{im, a + b}})
      if (id < 0)
        throw Error(file + ": merge #" + std::to_string(r) + " ('" + a + "', '" + b +
                    "') refers to unknown token '" + s + "'");
    model_.merges[BpeModel::key(ia, ib)] = {static_cast<int32_t>(r), im};
  }

  normalizer_ = parse_normalizer(j.value("normalizer", json()), file);
  pre_tokenizer_ = parse_pre_tokenizer(j.value("pre_tokenizer", json()), file);
  decoder_ = parse_decoder(j.value("decoder", json()), file);
  const auto lookup = [this](const std::string& s) { return token_id(s); };
  post_processor_ = parse_post_processor(j.value("post_processor", json()), file, lookup);
  if (post_processor_) {  // the ids a template adds must exist
    std::vector<int32_t> added_ids;
    post_processor_->apply(added_ids);
    for (int32_t id : added_ids)
      if (id >= vocab_size())
        throw Error(file + ": post_processor adds id " + std::to_string(id) + " outside the vocabulary");
  }

  // Added tokens: `normalized` ones are matched in normalized text, so their pattern is the
  // normalized content.
  for (size_t k = 0; k < added_.size(); ++k) {
    if (added_[k].normalized) {
      std::string pat = added_[k].content;
      if (normalizer_) normalizer_->apply(pat);
      normalized_matcher_.add(pat, k);
    } else {
      raw_matcher_.add(added_[k].content, k);
    }
  }

  // BOS/EOS: config files first, then the template's leading token, then conventional names.
  SpecialIds fb;
  fb.bos = post_processor_ ? post_processor_->leading_special() : -1;
  for (const char* s : {"<s>", "<|begin_of_text|>", "<|startoftext|>"})
    if (fb.bos < 0) fb.bos = token_id(s);
  for (const char* s : {"</s>", "<|end_of_text|>", "<|endoftext|>"})
    if (fb.eos < 0) fb.eos = token_id(s);
  const SpecialIds ids = resolve_special_ids(dir, vocab_size(), lookup, fb);
  bos_ = ids.bos;
  eos_ = ids.eos;
}

int32_t HfBpeTokenizer::token_id(const std::string& s) const {
  for (const auto& t : added_)
    if (t.content == s) return t.id;
  return model_.find(s);
}

void HfBpeTokenizer::split_added(Pieces& ps, const AddedMatcher& m) const {
  if (m.empty()) return;
  const auto last_is_word = [](std::string_view s) {
    if (s.empty()) return false;
    size_t k = s.size() - 1;
    while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    return uc::is_word_char(uc::next_code_point(s, k));
  };
  split_each(ps, [&](Piece& p) {
    const std::string_view s = p.text;
    Pieces out;
    size_t start_offset = 0;
    for (const auto& match : m.find(s)) {
      const AddedToken& t = added_[match.token];
      size_t b = match.b, e = match.e;
      if (b < start_offset) continue;  // swallowed by the previous token's rstrip
      if (t.single_word) {
        size_t k = e;
        const bool word_before = last_is_word(s.substr(0, b));
        const bool word_after = e < s.size() && uc::is_word_char(uc::next_code_point(s, k));
        if (word_before || word_after) continue;
      }
      if (t.lstrip) {
        size_t nb = b;
        while (nb > start_offset) {
          size_t k = nb - 1;
          while (k > start_offset && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
          size_t i = k;
          if (!uc::is_whitespace(uc::next_code_point(s, i))) break;
          nb = k;
        }
        b = nb;
      }
      if (t.rstrip) {
        while (e < s.size()) {
          size_t i = e;
          if (!uc::is_whitespace(uc::next_code_point(s, i))) break;
          e = i;
        }
      }
      if (b > start_offset)
        out.push_back({std::string(s.substr(start_offset, b - start_offset)), -1, p.at_origin && start_offset == 0});
      out.push_back({std::string(s.substr(b, e - b)), t.id, false});
      start_offset = e;
    }
    if (start_offset < s.size())
      out.push_back({std::string(s.substr(start_offset)), -1, p.at_origin && start_offset == 0});
    return out;
  });
}

std::vector<int32_t> HfBpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!uc::is_valid_utf8(text)) throw Error("tokenizer (" + file_ + "): input text is not valid UTF-8");
  Pieces ps{{std::string(text), -1, true}};
  split_added(ps, raw_matcher_);
  if (normalizer_)
    for (Piece& p : ps)
      if (p.added_id < 0) normalizer_->apply(p.text);
  split_added(ps, normalized_matcher_);
  if (pre_tokenizer_) pre_tokenizer_->apply(ps);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const Piece& p : ps) {
    if (p.added_id >= 0) ids.push_back(p.added_id);
    else model_.tokenize(p.text, ids);
  }
  if (add_special_tokens && post_processor_) post_processor_->apply(ids);
  return ids;
}

std::string HfBpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  Tokens toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    // Unknown ids (outside the table or in a hole of it) are skipped, as in `tokenizers`.
    if (id < 0 || id >= vocab_size() || id_to_token_[static_cast<size_t>(id)].empty()) continue;
    if (skip_special_tokens && special_[static_cast<size_t>(id)]) continue;
    toks.push_back(id_to_token_[static_cast<size_t>(id)]);
  }
  if (!decoder_) {
    std::string out;
    for (size_t k = 0; k < toks.size(); ++k) out += (k ? " " : "") + toks[k];
    return out;
  }
  std::string out;
  for (const auto& t : decoder_->apply(std::move(toks))) out += t;
  return out;
}

// Resource caps, far above real tokenizers (Llama-3: 128K tokens, 280K merges, 9 MB; Gemma:
// 256K tokens, 34 MB) so that a hostile or corrupt file fails with a message instead of
// exhausting memory: the size is checked before the file is read, the counts while it is parsed
// (the parse stops at the first entry over a cap).
constexpr size_t kMaxVocab = 2'000'000;                          // model.vocab, and added_tokens
constexpr size_t kMaxMerges = 5'000'000;

json read_tokenizer_json(const std::string& path) {
  const std::string text = read_file_capped(path, kMaxTokenizerFileBytes);  // 1 GiB
  // Counts the entries of model.vocab, model.merges and added_tokens as the parser meets them
  // (depth 1: keys of the root; 2: of "model"; 3: entries of model.vocab / model.merges).
  std::string key1, key2;
  size_t vocab = 0, merges = 0, added = 0;
  auto over = [&](const char* what, size_t cap) {
    throw Error(path + ": more than " + std::to_string(cap) + " " + what +
                " (the limit for a tokenizer.json)");
  };
  auto count = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    using E = json::parse_event_t;
    if (ev == E::key) {
      if (depth == 1) key1 = parsed.get<std::string>();
      else if (depth == 2) key2 = parsed.get<std::string>();
      else if (depth == 3 && key1 == "model" && key2 == "vocab" && ++vocab > kMaxVocab)
        over("vocabulary entries", kMaxVocab);
    }
    const bool element_done = ev == E::value || ev == E::array_end || ev == E::object_end;
    if (element_done && depth == 3 && key1 == "model" && key2 == "merges" && ++merges > kMaxMerges)
      over("merges", kMaxMerges);
    if (element_done && depth == 2 && key1 == "added_tokens" && ++added > kMaxVocab)
      over("added tokens", kMaxVocab);
    return true;
  };
  try {
    return json::parse(text, count);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path, const std::string& dir) {
  const json j = read_tokenizer_json(path);
  try {
    return std::make_unique<HfBpeTokenizer>(j, path, dir);
  } catch (const json::exception& e) {
    // A field of the wrong type or a missing required key.
    throw Error(path + ": malformed tokenizer: " + e.what());
  }
}

}  // namespace llmint8::io

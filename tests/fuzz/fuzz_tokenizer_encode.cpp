// Fuzz target: arbitrary bytes as text through the real tokenizers in shared/ -- stories260K
// (SentencePiece-style BPE with byte fallback) and GPT-2 (byte-level BPE) -- via
// Tokenizer::load, as the CLI uses them. Invalid UTF-8 must be refused with Error; valid text
// must encode to ids inside the vocabulary, decode without failing, and for GPT-2 (byte level,
// no normalizer) decode back to exactly the input, as Hugging Face tokenizers does.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "llmint8/tokenizer.h"

using namespace llmint8;

namespace {

std::string shared_dir() {
  const char* env = std::getenv("LLMINT8_SHARED_DIR");
  return env && *env ? env : LLMINT8_SHARED_DIR;
}

std::unique_ptr<Tokenizer> load(const std::string& name) {
  const std::string dir = shared_dir() + "/models/" + name;
  if (!std::filesystem::exists(dir + "/tokenizer.json")) {
    std::fprintf(stderr, "fuzz_tokenizer_encode: %s/tokenizer.json not found (set LLMINT8_SHARED_DIR)\n",
                 dir.c_str());
    std::abort();
  }
  return Tokenizer::load(dir);
}

bool valid_utf8(std::string_view s) {
  // Independent of the library's check: RFC 3629 (no overlongs, no surrogates, <= U+10FFFF).
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
    else return false;
    if (s.size() - i <= size_t(n)) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += size_t(n) + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<Tokenizer> stories = load("stories260K");
  static const std::unique_ptr<Tokenizer> gpt2 = load("gpt2-tokenizer");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = valid_utf8(text);
  for (const Tokenizer* tok : {stories.get(), gpt2.get()}) {
    try {
      const auto ids = tok->encode(text, true);
      fuzz::check(valid, "invalid UTF-8 accepted");
      for (const int32_t id : ids)
        fuzz::check(id >= 0 && id < tok->vocab_size(), "id outside the vocabulary");
      const std::string back = tok->decode(ids, false);
      (void)tok->decode(ids, true);
      if (tok == gpt2.get()) fuzz::check(back == text, "GPT-2 decode(encode(text)) != text", back);
    } catch (const Error& e) {
      fuzz::check(!valid, "valid UTF-8 refused", e.what());
      const std::string_view msg = e.what();
      fuzz::check(msg.find('\n') == std::string_view::npos, "message is not one line", msg);
    }
  }
  return 0;
}

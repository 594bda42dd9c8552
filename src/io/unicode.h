// UTF-8 and Unicode helpers for the tokenizers: code point iteration, the lossy UTF-8 decoding
// that Hugging Face `tokenizers` applies when it turns bytes back into text, the GPT-2 byte <->
// printable-character table, normalization forms (through utf8proc) and regular expressions
// (through PCRE2 in UTF + UCP mode, so \s, \p{L}, \p{N} and lookahead behave as in the
// Oniguruma engine that `tokenizers` uses).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmint8::unicode {

// Byte length of the UTF-8 sequence that starts at s[i]; 1 for a byte that does not start a
// valid sequence (so iteration always advances and never runs past the end).
size_t char_len(std::string_view s, size_t i);
// Decodes the code point at s[i] (U+FFFD for an invalid sequence) and advances i.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);
bool is_valid_utf8(std::string_view s);
// Bytes to text, each maximal invalid subpart replaced by U+FFFD (as Rust's from_utf8_lossy).
std::string lossy_utf8(std::string_view bytes);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(char32_t c);
// The Unicode \w of Rust's regex crate (letters, marks, digits, '_'), as the added-token
// single_word check uses it.
bool is_word_char(char32_t c);
// Unicode general category N* (Rust's char::is_numeric).
bool is_numeric(char32_t c);
bool is_punctuation(char32_t c);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, NormalForm form);
std::string lowercase(std::string_view s);

// GPT-2's reversible map from the 256 byte values to printable code points (as UTF-8 strings).
const std::array<std::string, 256>& byte_to_unicode();
// The inverse: code point -> byte, or -1 when the code point is not in the table.
int unicode_to_byte(char32_t c);

// A compiled PCRE2 pattern. Nested character classes of the Oniguruma syntax (BLOOM's
// "[^(\s|[.,!?])]") are flattened first, as PCRE2 does not nest classes.
class Regex {
 public:
  explicit Regex(const std::string& pattern);  // throws Error on a pattern PCRE2 rejects
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping [begin, end) byte ranges of the matches, left to right; empty matches are
  // skipped. The subject must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmint8::unicode

// Incremental detokenization for streaming generation.
//
// Tokens do not map to text one by one: SentencePiece decoders strip the first space of the whole
// text, and byte-fallback / byte-level tokens can split one UTF-8 character over several ids. So
// every step decodes prompt + new ids as a whole, takes the part after the decoded prompt, and
// hands out only what extends the text already handed out -- holding everything back while the
// text ends in U+FFFD (the decoder's mark for an incomplete byte sequence), as Hugging Face's
// TextStreamer does for printable text.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "llmint8/tokenizer.h"

namespace llmint8 {

class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::span<const int32_t> prompt_ids);
  // Adds one id; returns the newly printable text (possibly empty).
  std::string push(int32_t id);
  // Returns what is still held back (the text may end in U+FFFD for good now).
  std::string finish();
  // Everything handed out so far (after finish(): the whole continuation).
  const std::string& emitted() const { return emitted_; }

 private:
  void update();
  std::string take_new();
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;  // prompt + new
  size_t prompt_len_;
  std::string prompt_text_;
  std::string text_;     // continuation as decoded now
  std::string emitted_;  // concatenation of the pieces handed out
};

// True when s ends in U+FFFD (EF BF BD).
bool ends_with_replacement_char(const std::string& s);

}  // namespace llmint8

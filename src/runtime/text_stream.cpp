#include "runtime/text_stream.h"

namespace llmint8 {

bool ends_with_replacement_char(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

TextStream::TextStream(const Tokenizer& tok, std::span<const int32_t> prompt_ids)
    : tok_(tok), ids_(prompt_ids.begin(), prompt_ids.end()), prompt_len_(prompt_ids.size()) {
  prompt_text_ = tok_.decode(ids_, /*skip_special_tokens=*/true);
}

void TextStream::update() {
  const std::string full = tok_.decode(ids_, true);
  if (full.size() >= prompt_text_.size() && full.compare(0, prompt_text_.size(), prompt_text_) == 0) {
    text_ = full.substr(prompt_text_.size());
  } else {
    // The prompt's text changed with what followed (a decoder merging across the boundary):
    // fall back to the new ids alone.
    text_ = tok_.decode(std::span<const int32_t>(ids_).subspan(prompt_len_), true);
  }
}

std::string TextStream::push(int32_t id) {
  ids_.push_back(id);
  update();
  if (ends_with_replacement_char(text_)) return {};
  // Only text that extends what was handed out can be handed out; a decoder that rewrote earlier
  // text (never seen with the supported decoders) leaves the stream as it was.
  return take_new();
}

std::string TextStream::take_new() {
  if (text_.size() <= emitted_.size() || text_.compare(0, emitted_.size(), emitted_) != 0) return {};
  std::string piece = text_.substr(emitted_.size());
  emitted_ = text_;
  return piece;
}

std::string TextStream::finish() { return take_new(); }

}  // namespace llmint8

// Internals shared by the tokenizer implementations (see include/llmint8/tokenizer.h).
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "llmint8/tokenizer.h"

namespace llmint8::io {

// tokenizer.json (Hugging Face `tokenizers`, BPE model); `dir` holds the optional
// tokenizer_config.json / config.json consulted for BOS/EOS.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path, const std::string& dir);
// tokenizer.model (SentencePiece) through libsentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path, const std::string& dir);

// Parsed JSON file of at most io::kMaxConfigFileBytes (tokenizer_config.json, config.json);
// throws Error("<path>: ...") when unreadable, too large or malformed.
nlohmann::json read_json_file(const std::string& path);
// Parsed <dir>/<name> when that file exists, else nullopt (errors as read_json_file).
std::optional<nlohmann::json> read_optional_json(const std::string& dir, const std::string& name);

// BOS/EOS resolution, most authoritative source first: config.json's bos_token_id/eos_token_id,
// tokenizer_config.json's bos_token/eos_token (a string or {"content": ...}), then `fallback`
// (the tokenizer's own notion, e.g. a TemplateProcessing prefix). `lookup` maps a token string
// to its id or -1. Throws Error naming the file when an id there is outside [0, vocab_size).
struct SpecialIds {
  int32_t bos = -1, eos = -1;
};
SpecialIds resolve_special_ids(const std::string& dir, int32_t vocab_size,
                               const std::function<int32_t(const std::string&)>& lookup,
                               SpecialIds fallback);

}  // namespace llmint8::io

// Tokenizers of Hugging Face model directories. Ids equal Hugging Face `tokenizers`' ids.
//  * tokenizer.json: BPE models -- GPT-2 byte-level (ByteLevel pre-tokenizer/decoder) and
//    SentencePiece-style (Metaspace / Prepend+Replace normalizers, byte fallback) -- with the
//    normalizers, pre-tokenizers, post-processors (TemplateProcessing, ByteLevel) and decoders
//    these families use; added/special tokens are matched in the input text first, as
//    `tokenizers` does.
//  * tokenizer.model (SentencePiece proto, through libsentencepiece) when there is no tokenizer.json.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmint8 {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Loads <dir>/tokenizer.json, else <dir>/tokenizer.model (also when tokenizer.json does not
  // load, e.g. an unsupported model type: a warning goes to stderr); throws Error naming the
  // file and the problem when neither loads.
  static std::unique_ptr<Tokenizer> load(const std::string& dir);

  // add_special_tokens: apply the post-processor (e.g. BOS for Llama), as tokenizer(text) does.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const = 0;
  // skip_special_tokens as in tokenizer.decode(ids, skip_special_tokens=...).
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t eos_id() const = 0;  // -1 when the tokenizer has none
  virtual std::string id_to_token(int32_t id) const = 0;
  // The id of a token string (added tokens first, then the model vocabulary); -1 when absent.
  // (The base version scans id_to_token; the library's tokenizers override it with a lookup.)
  virtual int32_t token_to_id(std::string_view token) const;
};

}  // namespace llmint8

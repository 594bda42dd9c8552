// tokenizer.model (SentencePiece) through Debian's libsentencepiece, used when a model directory
// has no tokenizer.json. Special-token handling follows Hugging Face's LlamaTokenizer defaults:
// BOS prepended (tokenizer_config.json's add_bos_token, default true), no EOS (add_eos_token,
// default false); decode drops control pieces (and unk) when skip_special_tokens is set, and
// otherwise prints them as their piece text.
#include <sentencepiece_processor.h>

#include "io/read_file.h"
#include "io/tokenizer_impl.h"
#include "llmint8/error.h"

namespace llmint8::io {
namespace {

using json = nlohmann::json;

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const std::string& dir) : file_(path) {
    // Read the bytes ourselves so a missing file and a corrupt one give distinct messages.
    const std::string bytes = read_file_capped(path, kMaxTokenizerFileBytes);
    const auto st = sp_.LoadFromSerializedProto(bytes);
    if (!st.ok()) throw Error(path + ": not a valid SentencePiece model: " + st.ToString());
    if (sp_.GetPieceSize() <= 0) throw Error(path + ": SentencePiece model has no pieces");
    if (auto tc = read_optional_json(dir, "tokenizer_config.json")) {
      const auto flag = [&](const char* k, bool def) {
        if (!tc->is_object() || !tc->contains(k) || (*tc)[k].is_null()) return def;
        if (!(*tc)[k].is_boolean()) throw Error(dir + "/tokenizer_config.json: " + k + " is not a boolean");
        return (*tc)[k].get<bool>();
      };
      add_bos_ = flag("add_bos_token", true);
      add_eos_ = flag("add_eos_token", false);
    }
    const auto lookup = [this](const std::string& s) { return token_to_id(s); };
    const SpecialIds ids = resolve_special_ids(dir, vocab_size(), lookup, {sp_.bos_id(), sp_.eos_id()});
    bos_ = ids.bos;
    eos_ = ids.eos;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int> pieces;
    const auto st = sp_.Encode(text, &pieces);
    if (!st.ok()) throw Error("tokenizer (" + file_ + "): encode failed: " + st.ToString());
    std::vector<int32_t> ids;
    ids.reserve(pieces.size() + 2);
    if (add_special_tokens && add_bos_ && bos_ >= 0) ids.push_back(bos_);
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    if (add_special_tokens && add_eos_ && eos_ >= 0) ids.push_back(eos_);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::string out;
    std::vector<int> run;  // ordinary pieces, decoded together so SentencePiece handles spacing
    const auto flush = [&] {
      if (run.empty()) return;
      std::string s;
      const auto st = sp_.Decode(run, &s);
      if (!st.ok()) throw Error("tokenizer (" + file_ + "): decode failed: " + st.ToString());
      out += s;
      run.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;  // unknown ids are skipped
      const bool special = sp_.IsControl(id) || sp_.IsUnknown(id);
      if (special && skip_special_tokens) continue;
      if (sp_.IsControl(id)) {
        flush();
        out += sp_.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? sp_.IdToPiece(id) : std::string();
  }
  int32_t token_to_id(std::string_view token) const override {
    // PieceToId answers unk_id for an unknown piece; only the unk piece itself maps there.
    const int id = sp_.PieceToId(token);
    return id == sp_.unk_id() && token != sp_.IdToPiece(id) ? -1 : static_cast<int32_t>(id);
  }

 private:
  std::string file_;
  sentencepiece::SentencePieceProcessor sp_;
  bool add_bos_ = true, add_eos_ = false;
  int32_t bos_ = -1, eos_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path, const std::string& dir) {
  return std::make_unique<SentencePieceTokenizer>(path, dir);
}

}  // namespace llmint8::io

// Tokenizer::load and the helpers shared by the tokenizer.json and tokenizer.model back ends.
#include <cstdio>
#include <filesystem>
#include <string_view>

#include "io/read_file.h"
#include "io/tokenizer_impl.h"
#include "llmint8/error.h"

namespace llmint8 {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("tokenizer: '" + dir + "' is not a directory");
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string model_path = (fs::path(dir) / "tokenizer.model").string();
  const bool has_model = fs::exists(model_path, ec);
  if (fs::exists(json_path, ec)) {
    try {
      return io::load_hf_tokenizer_json(json_path, dir);
    } catch (const Error& json_error) {
      if (!has_model) throw;
      // E.g. a Unigram tokenizer.json beside its SentencePiece model: the model describes the
      // same tokenizer, so use it, but say why.
      try {
        auto tok = io::load_sentencepiece_model(model_path, dir);
        std::fprintf(stderr, "llmint8: warning: %s; using %s instead\n", json_error.what(), model_path.c_str());
        return tok;
      } catch (const Error& model_error) {
        // The same cause for both (a broken config.json or tokenizer_config.json beside them):
        // say it once.
        if (std::string_view(model_error.what()) == json_error.what()) throw;
        throw Error(std::string(json_error.what()) + "; and " + model_error.what());
      }
    }
  }
  if (has_model) return io::load_sentencepiece_model(model_path, dir);
  throw Error("tokenizer: '" + dir + "' has neither tokenizer.json nor tokenizer.model");
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  for (int32_t id = 0; id < vocab_size(); ++id)
    if (id_to_token(id) == token) return id;
  return -1;
}

namespace io {

using json = nlohmann::json;

json read_json_file(const std::string& path) {
  const std::string text = read_file_capped(path, kMaxConfigFileBytes);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

std::optional<json> read_optional_json(const std::string& dir, const std::string& name) {
  const std::string p = (fs::path(dir) / name).string();
  if (!path_exists(p)) return std::nullopt;
  return read_json_file(p);
}

namespace {

// config.json's *_token_id: an integer, null, or (EOS of chat models) a list whose first entry is
// the primary one.
int32_t config_token_id(const json& cfg, const char* key, const std::string& file, int32_t vocab) {
  if (!cfg.is_object() || !cfg.contains(key)) return -1;
  json v = cfg[key];
  if (v.is_array()) {
    if (v.empty()) return -1;
    v = v[0];
  }
  if (v.is_null()) return -1;
  if (!v.is_number_integer())
    throw Error(file + ": " + key + " is not an integer");
  const auto id = v.get<int64_t>();
  if (id < 0 || id >= vocab)
    throw Error(file + ": " + key + " " + std::to_string(id) + " is outside the vocabulary (size " +
                std::to_string(vocab) + ")");
  return static_cast<int32_t>(id);
}

// tokenizer_config.json's bos_token/eos_token: "<s>" or {"content": "<s>", ...}.
int32_t config_token_string(const json& cfg, const char* key,
                            const std::function<int32_t(const std::string&)>& lookup) {
  if (!cfg.is_object() || !cfg.contains(key)) return -1;
  const json& v = cfg[key];
  if (v.is_string()) return lookup(v.get<std::string>());
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return lookup(v["content"].get<std::string>());
  return -1;
}

}  // namespace

SpecialIds resolve_special_ids(const std::string& dir, int32_t vocab_size,
                               const std::function<int32_t(const std::string&)>& lookup,
                               SpecialIds fallback) {
  SpecialIds ids;
  if (auto cfg = read_optional_json(dir, "config.json")) {
    const std::string file = (fs::path(dir) / "config.json").string();
    ids.bos = config_token_id(*cfg, "bos_token_id", file, vocab_size);
    ids.eos = config_token_id(*cfg, "eos_token_id", file, vocab_size);
  }
  if (ids.bos < 0 || ids.eos < 0) {
    if (auto tc = read_optional_json(dir, "tokenizer_config.json")) {
      if (ids.bos < 0) ids.bos = config_token_string(*tc, "bos_token", lookup);
      if (ids.eos < 0) ids.eos = config_token_string(*tc, "eos_token", lookup);
    }
  }
  if (ids.bos < 0) ids.bos = fallback.bos;
  if (ids.eos < 0) ids.eos = fallback.eos;
  return ids;
}

}  // namespace io
}  // namespace llmint8

// Fuzz target: tokenizer.json loading (io::load_hf_tokenizer_json, what Tokenizer::load uses for
// a tokenizer.json). The bytes go to a private temporary directory because the loader reads a
// path (and consults config.json / tokenizer_config.json beside it, absent here); one file,
// rewritten for every input, and the directory is removed when the run ends (and, after a crash,
// by the next run). A tokenizer that loads must then encode and decode a few fixed texts
// without failing other than with Error, and produce ids inside its vocabulary.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_util.h"
#include "io/tokenizer_impl.h"

using namespace llmint8;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = fuzz::private_temp_dir("tokenizer");
  static const std::string path = dir + "/tokenizer.json";
  // LLMINT8_FUZZ_VERBOSE=1: say whether each input loads (to check that seeds are valid).
  static const bool verbose = std::getenv("LLMINT8_FUZZ_VERBOSE") != nullptr;
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    fuzz::check(f != nullptr, "cannot write the temporary tokenizer.json", path);
    fuzz::check(std::fwrite(data, 1, size, f) == size, "short write", path);
    std::fclose(f);
  }
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = io::load_hf_tokenizer_json(path, dir);
  } catch (const Error& e) {
    fuzz::check_error(e, path);
    if (verbose) std::fprintf(stderr, "not loaded: %s\n", e.what());
    return 0;
  }
  if (verbose) std::fprintf(stderr, "loaded: vocab %d\n", tok->vocab_size());
  static const char* kTexts[] = {"", "Hello world", " leading  spaces\tand\nlines ",
                                 "caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80 <s></s><|endoftext|> 123"};
  const int32_t vocab = tok->vocab_size();
  fuzz::check(vocab >= 0, "negative vocab size");
  for (const char* text : kTexts) {
    try {
      for (const bool special : {true, false}) {
        const auto ids = tok->encode(text, special);
        for (const int32_t id : ids) fuzz::check(id >= 0 && id < vocab, "id outside the vocabulary", text);
        (void)tok->decode(ids, true);
        (void)tok->decode(ids, false);
      }
    } catch (const Error& e) {
      fuzz::check_error(e, path);
    }
  }
  (void)tok->bos_id();
  (void)tok->eos_id();
  if (vocab > 0) {
    (void)tok->token_to_id(tok->id_to_token(vocab - 1));
    (void)tok->id_to_token(vocab);  // out of range: empty, not a crash
  }
  return 0;
}

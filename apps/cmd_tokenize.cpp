// llmint8 tokenize: token ids of a text; needs only the tokenizer files of the directory.
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "llmint8/error.h"

namespace llmint8::cli {
namespace {

struct TokenizeArgs {
  CommonOptions common;
  std::string text_file;
  std::string prompt;
  bool no_special = false;
  CLI::Option *text_opt = nullptr, *prompt_opt = nullptr;
};

int run_tokenize(TokenizeArgs& a) {
  load_options(a.common);  // same validation as every subcommand, though nothing is loaded
  const std::string text = a.text_opt->count() ? read_file(a.text_file, "--text") : a.prompt;
  auto tok = load_tokenizer(a.common.model_dir);
  const std::vector<int32_t> ids = tok->encode(text, /*add_special_tokens=*/!a.no_special);
  if (a.common.json) {
    nlohmann::json j;
    j["ids"] = ids;
    j["count"] = ids.size();
    print_json(j);
  } else {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(ids[i]);
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  return 0;
}

}  // namespace

Command register_tokenize(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* sub = app.add_subcommand("tokenize", "Print the token ids of a text (only the tokenizer files are read)");
  add_common_options(sub, a->common);
  // Exactly one of --text / -p.
  auto* input = sub->add_option_group("input", "The text to tokenize (exactly one)");
  a->text_opt = input->add_option("--text", a->text_file, "Text file, read as bytes")->type_name("FILE");
  a->prompt_opt = input->add_option("-p,--prompt", a->prompt, "Text given on the command line")->type_name("TEXT");
  input->require_option(1);
  sub->add_flag("--no-special", a->no_special, "Do not add special tokens (e.g. Llama's BOS)");
  sub->footer(
      "Example:\n"
      "  llmint8 tokenize -m ../shared/models/gpt2-tokenizer -p \"Hello world\" --json");
  return {sub, [a] { return run_tokenize(*a); }};
}

}  // namespace llmint8::cli

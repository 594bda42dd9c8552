// llmint8: the command-line tool. Each subcommand lives in its own apps/cmd_*.cpp and registers
// itself here.
//
// Exit codes: 0 success, 1 error while running (one line "llmint8: error: ..." on stderr),
// 2 usage error (bad or missing option; one line on stderr).
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli_common.h"
#include "llmint8/error.h"
#include "llmint8/version.h"

namespace {

// Error text as one line: a multi-line what() must not break the one-line contract.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int report(const std::string& what, int code) {
  std::fprintf(stderr, "llmint8: error: %s\n", one_line(what).c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    CLI::App app{"llmint8: run Hugging Face language models with LLM.int8() (8-bit, no quality loss)",
                 "llmint8"};
    app.set_version_flag("--version", std::string("llmint8 ") + LLMINT8_VERSION);
    app.require_subcommand(0, 1);
    app.footer(
        "Examples:\n"
        "  llmint8 generate -p \"Once upon a time\" -n 64\n"
        "  llmint8 perplexity -m ../shared/models/stories260K --text story.txt --ctx 256\n"
        "  llmint8 tokenize -m ../shared/models/gpt2-tokenizer -p \"Hello world\"\n"
        "  llmint8 info -m ../shared/models/stories260K --json\n"
        "  llmint8 quantize -m ../shared/models/stories260K -o stories260K-int8\n"
        "  llmint8 eval -m ../shared/models/stories260K --tasks lambada,piqa --limit 200 --compare int8,fp32\n"
        "  llmint8 outliers -m ../shared/models/stories260K --text story.txt --plot outliers.svg\n"
        "Run 'llmint8 <subcommand> --help' for the options of each.");

    std::vector<llmint8::cli::Command> commands = {
        llmint8::cli::register_generate(app), llmint8::cli::register_perplexity(app),
        llmint8::cli::register_tokenize(app), llmint8::cli::register_info(app),
        llmint8::cli::register_quantize(app), llmint8::cli::register_eval(app),
        llmint8::cli::register_outliers(app)};

    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
      return report(std::string(e.what()) + " (run with --help for usage)", 2);
    }
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const llmint8::Error& e) {
    return report(e.what(), 1);
  } catch (const std::bad_alloc&) {
    return report("out of memory", 1);
  } catch (const std::exception& e) {
    return report(e.what(), 1);
  } catch (...) {
    return report("unknown failure", 1);
  }
}

// llmint8: the command-line tool. Each subcommand lives in its own apps/cmd_*.cpp and registers
// itself here.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "llmint8/error.h"
#include "llmint8/version.h"

int main(int argc, char** argv) {
  CLI::App app{"llmint8: run Hugging Face language models with LLM.int8() (8-bit, no quality loss)",
               "llmint8"};
  app.set_version_flag("--version", std::string("llmint8 ") + LLMINT8_VERSION);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (argc == 1) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  }
  return 0;
}

// Shared checks of the fuzz targets: a parser given hostile bytes may only throw llmint8::Error
// (anything else escapes LLVMFuzzerTestOneInput and libFuzzer reports it), and the message must
// be the one line the project promises, naming the file. Violations abort, which libFuzzer
// records as a crash with the input that caused it.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "llmint8/error.h"

namespace llmint8::fuzz {

[[noreturn]] inline void die(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz invariant violated: %s: %.*s\n", what, int(detail.size()),
               detail.data());
  std::abort();
}

inline void check(bool ok, const char* what, std::string_view detail = {}) {
  if (!ok) die(what, detail);
}

// The message of an Error from parsing `name`: names it, is one line.
inline void check_error(const Error& e, std::string_view name) {
  const std::string_view msg = e.what();
  check(msg.find(name) != std::string_view::npos, "message does not name the file", msg);
  check(msg.find('\n') == std::string_view::npos && msg.find('\r') == std::string_view::npos,
        "message is not one line", msg);
}

}  // namespace llmint8::fuzz

// Shared checks of the fuzz targets: a parser given hostile bytes may only throw llmint8::Error
// (anything else escapes LLVMFuzzerTestOneInput and libFuzzer reports it), and the message must
// be the one line the project promises, naming the file. Violations abort, which libFuzzer
// records as a crash with the input that caused it.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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

// A private directory for targets whose parser reads files by path:
// <base>/llmint8-fuzz-<tag>-<pid>, base /dev/shm when there is one (no disk I/O per input), else
// the temporary directory. It is removed when the run ends (libFuzzer leaves through exit()), and
// the directories of earlier runs whose process is gone -- a crash leaves through _Exit, past
// the atexit handler -- are removed when the next run starts, so no run leaves files behind.
namespace detail {
inline std::string& private_dir_path() {
  static std::string p;
  return p;
}
inline void remove_private_dir() {
  std::error_code ec;
  if (!private_dir_path().empty()) std::filesystem::remove_all(private_dir_path(), ec);
}
}  // namespace detail

inline std::string private_temp_dir(const std::string& tag) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
  const std::string prefix = "llmint8-fuzz-" + tag + "-";
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    char* rest = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &rest, 10);
    if (pid <= 0 || *rest != '\0' || pid == long(::getpid())) continue;
    if (::kill(pid_t(pid), 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove_all(it->path(), rm);
    }
  }
  const fs::path d = base / (prefix + std::to_string(::getpid()));
  fs::create_directories(d, ec);
  check(!ec, "cannot create the temporary directory", d.string());
  if (detail::private_dir_path().empty()) std::atexit(detail::remove_private_dir);
  detail::private_dir_path() = d.string();
  return d.string();
}

}  // namespace llmint8::fuzz

#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

namespace llmint8 {

namespace detail {
// Messages quote text from the files being read (tensor names, JSON keys and values); a hostile
// file could put line breaks or terminal control codes there. Every control byte is escaped so
// that a message stays one printable line.
inline std::string one_line(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) {
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}
}  // namespace detail

// Every failure the library reports is an Error whose what() is one line a user can act on:
// it names the file / tensor / argument and the problem (control characters escaped).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(detail::one_line(msg)) {}
};
}  // namespace llmint8

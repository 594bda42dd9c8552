// Error messages quote names and text taken from the files being read (tensor names, JSON
// tokens); a hostile file could put line breaks or terminal control codes into them. one_line()
// escapes every control byte so that a message stays the single printable line Error promises.
#pragma once
#include <string>
#include <string_view>

namespace llmint8::io {

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

}  // namespace llmint8::io

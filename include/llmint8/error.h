#pragma once
#include <stdexcept>
#include <string>

namespace llmint8 {
// Every failure the library reports is an Error whose what() is one line a user can act on:
// it names the file / tensor / argument and the problem.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};
}  // namespace llmint8

// A private temporary directory per test, removed at its end, and the file helpers the tests
// that build (corrupt) files in it share.
//
// The directory is made by mkdtemp under ::testing::TempDir() and named after the running test
// ("llmint8_<Suite>_<Test>_XXXXXX"), so the same test run at once by two builds (ctest -j, other
// worktrees on the machine) never shares it.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

namespace llmint8::test {

namespace fs = std::filesystem;

// Writes `bytes` to `p` (created or truncated); a failure is a test failure.
inline void write_file(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  f.close();
  EXPECT_TRUE(f.good()) << "cannot write " << p;
}

// The whole content of `p` ("" when it cannot be read).
inline std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class TempDir {
 public:
  TempDir() {
    std::string tag = "llmint8";
    if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info())
      tag += std::string("_") + info->test_suite_name() + "_" + info->name();
    for (char& c : tag)  // parameterised names hold '/'
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
    if (tag.size() > 120) tag.resize(120);
    std::string tmpl = (fs::path(::testing::TempDir()) / (tag + "_XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
      return;
    }
    dir_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!dir_.empty()) {
      // A test may have taken permissions away from something inside (unreadable files).
      fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
      fs::remove_all(dir_, ec);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& dir() const { return dir_; }
  std::string str() const { return dir_.string(); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& bytes) const { write_file(path(name), bytes); }
  std::string read(const std::string& name) const { return read_file(path(name)); }
  // Names directly inside the directory.
  std::set<std::string> listing() const {
    std::set<std::string> s;
    for (const auto& e : fs::directory_iterator(dir_)) s.insert(e.path().filename().string());
    return s;
  }

 private:
  fs::path dir_;
};

// A test fixture owning a TempDir: dir_ is its path, path()/write()/read() work inside it.
class TempDirTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return tmp_.path(name); }
  void write(const std::string& name, const std::string& bytes) const { tmp_.write(name, bytes); }
  std::string read(const std::string& name) const { return tmp_.read(name); }
  std::set<std::string> listing() const { return tmp_.listing(); }

  TempDir tmp_;
  const fs::path dir_ = tmp_.dir();
};

}  // namespace llmint8::test

// Runs the llmint8 command-line tool (LLMINT8_CLI, the binary of this build) as a separate
// process: stdin /dev/null, stdout and stderr captured through temporary files (so no pipe can
// fill up), a wall-clock limit after which the process (group) is killed, and the outcome as
// data. Shared by test_cli and test_bad_input_matrix.
#pragma once
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"

extern char** environ;

namespace llmint8::test {

struct CliRun {
  int exit_code = -1;     // valid when the process exited
  bool signaled = false;  // killed by a signal (a crash, or the time limit)
  int signal = 0;
  bool timed_out = false;  // still running at the limit: killed with SIGKILL
  double seconds = 0;
  std::string out, err;
};

struct CliOptions {
  std::string cwd;         // working directory of the process ("" = ours)
  double timeout_s = 0;    // 0 = default_cli_timeout()
};

// The wall-clock limit of one CLI run: LLMINT8_CLI_TIMEOUT seconds when set (sanitizer builds
// are several times slower), else 60 s, far above what any run here needs (well under 5 s).
inline double default_cli_timeout() {
  if (const char* e = std::getenv("LLMINT8_CLI_TIMEOUT")) {
    const double v = std::atof(e);
    if (v > 0) return v;
  }
  return 60.0;
}

inline CliRun run_cli(const std::vector<std::string>& args, const CliOptions& opt = {}) {
  CliRun r;
  char out_tmpl[] = "/tmp/llmint8_cli_out_XXXXXX";
  char err_tmpl[] = "/tmp/llmint8_cli_err_XXXXXX";
  const int out_fd = mkstemp(out_tmpl), err_fd = mkstemp(err_tmpl);
  if (out_fd < 0 || err_fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (!opt.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, opt.cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // its own group: killed as a whole
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<std::string> argv_s = {LLMINT8_CLI};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = posix_spawn(&pid, LLMINT8_CLI, &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(out_fd);
  close(err_fd);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << LLMINT8_CLI << ": " << std::strerror(rc);
  } else {
    const double limit = opt.timeout_s > 0 ? opt.timeout_s : default_cli_timeout();
    int status = 0;
    auto wait_ms = std::chrono::milliseconds(1);
    for (;;) {
      const pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (w < 0 && errno != EINTR) {
        ADD_FAILURE() << "waitpid: " << std::strerror(errno);
        break;
      }
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (elapsed > limit) {
        r.timed_out = true;
        kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        break;
      }
      std::this_thread::sleep_for(wait_ms);
      wait_ms = std::min(wait_ms * 2, std::chrono::milliseconds(20));
    }
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) {
      r.signaled = true;
      r.signal = WTERMSIG(status);
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.out = read_file(out_tmpl);
  r.err = read_file(err_tmpl);
  unlink(out_tmpl);
  unlink(err_tmpl);
  return r;
}

// The command line and what came of it, for failure messages.
inline std::string describe(const std::vector<std::string>& args, const CliRun& r) {
  std::string s = "llmint8";
  for (auto& a : args) s += " '" + (a.size() > 200 ? a.substr(0, 200) + "...(" + std::to_string(a.size()) + " bytes)" : a) + "'";
  return s + "\n  exit " + std::to_string(r.exit_code) + (r.signaled ? " signal " + std::to_string(r.signal) : "") +
         (r.timed_out ? " (killed at the time limit)" : "") + "\n  stdout: " + r.out.substr(0, 400) +
         "\n  stderr: " + r.err.substr(0, 400);
}

}  // namespace llmint8::test

#pragma once
// Runs a program as a child process with its output captured to a file, for tests that
// drive the real stargazer binary.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace stargazer::test {

class child_process {
public:
  // Starts `argv` with extra environment entries ("NAME=value").
  explicit child_process(std::vector<std::string> argv, std::vector<std::string> env = {});
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signo) const;
  // The exit status (or 128+signal) once the process ended within `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // Everything the process wrote to stdout and stderr so far.
  std::string output() const;

private:
  pid_t pid_ = -1;
  std::string output_path_;
  std::optional<int> status_;
};

// Runs to completion and returns {status, output}.
std::pair<int, std::string> run_process(std::vector<std::string> argv, std::vector<std::string> env = {},
                                        std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace stargazer::test

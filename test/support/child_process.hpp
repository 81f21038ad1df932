#pragma once
// Runs a program as a child process with its output captured to a file, for tests that
// drive the real stargazer binary.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace stargazer::test {

class child_process {
public:
  // Starts `argv` with extra environment entries ("NAME=value"). With `pipe_stdin` the
  // child's stdin is a pipe fed by write_stdin() and ended by close_stdin() (or by the
  // destructor); otherwise the child inherits ours. With `output_path` the output goes to
  // that file and is kept after the process (logs of a longer run); otherwise to a
  // temporary file removed with this object.
  explicit child_process(std::vector<std::string> argv, std::vector<std::string> env = {}, bool pipe_stdin = false,
                         std::string output_path = {});
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signo) const;
  // The exit status (or 128+signal) once the process ended within `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // Everything the process wrote to stdout and stderr so far.
  std::string output() const;

  // Writes to the child's piped stdin; false when it cannot (never piped, closed, or the
  // child closed its end: no SIGPIPE reaches the test). Blocks while the pipe is full.
  bool write_stdin(std::string_view data);
  // Ends the child's input: it reads end-of-file.
  void close_stdin();

private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  std::string output_path_;
  bool keep_output_ = false;
  std::optional<int> status_;
};

// Runs to completion and returns {status, output}. With `input` the child's stdin is a
// pipe carrying it, then end-of-file.
std::pair<int, std::string> run_process(std::vector<std::string> argv, std::vector<std::string> env = {},
                                        std::chrono::milliseconds timeout = std::chrono::seconds(20),
                                        std::optional<std::string> input = std::nullopt);

}  // namespace stargazer::test

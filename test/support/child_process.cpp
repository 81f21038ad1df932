#include "child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace stargazer::test {

child_process::child_process(std::vector<std::string> argv, std::vector<std::string> env, bool pipe_stdin,
                             std::string output_path)
    : output_path_(std::move(output_path)), keep_output_(!output_path_.empty()) {
  static int counter = 0;
  if (output_path_.empty())
    output_path_ = (std::filesystem::temp_directory_path() /
                    ("sg-child-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log"))
                       .string();
  std::vector<std::string> envs;
  // Entries of `env` replace inherited ones of the same name (getenv finds the first).
  const auto overridden = [&](std::string_view entry) {
    const auto name = entry.substr(0, entry.find('=') + 1);
    for (const auto& e : env)
      if (std::string_view(e).substr(0, e.find('=') + 1) == name) return true;
    return false;
  };
  for (char** e = environ; *e != nullptr; ++e)
    if (!overridden(*e)) envs.emplace_back(*e);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> argv_c, env_c;
  for (auto& a : argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  for (auto& e : envs) env_c.push_back(e.data());
  env_c.push_back(nullptr);

  // Both ends close on exec: only the dup2'd fd 0 reaches the child, so other children
  // never hold the write end open (the child would never see end-of-file).
  int input[2] = {-1, -1};
  if (pipe_stdin && ::pipe2(input, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("cannot create a pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (pipe_stdin) posix_spawn_file_actions_adddup2(&actions, input[0], 0);
  posix_spawn_file_actions_addopen(&actions, 1, output_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int rc = ::posix_spawnp(&pid_, argv_c[0], &actions, nullptr, argv_c.data(), env_c.data());
  posix_spawn_file_actions_destroy(&actions);
  if (pipe_stdin) {
    ::close(input[0]);
    stdin_fd_ = input[1];
  }
  if (rc != 0) {
    close_stdin();
    throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
}

bool child_process::write_stdin(std::string_view data) {
  if (stdin_fd_ < 0) return false;
  // SIGPIPE blocked in this thread while writing: a child that has gone away makes write()
  // fail with EPIPE, and the pending signal is consumed before unblocking.
  sigset_t pipe_signal, previous;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
  bool ok = true;
  while (!data.empty()) {
    const auto n = ::write(stdin_fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      if (errno == EPIPE) {
        const timespec zero{};
        ::sigtimedwait(&pipe_signal, nullptr, &zero);
      }
      break;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return ok;
}

void child_process::close_stdin() {
  if (stdin_fd_ < 0) return;
  ::close(stdin_fd_);
  stdin_fd_ = -1;
}

child_process::~child_process() {
  close_stdin();
  if (!status_) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
  if (keep_output_) return;
  std::error_code ec;
  std::filesystem::remove(output_path_, ec);
}

void child_process::signal(int signo) const { ::kill(pid_, signo); }

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto until = std::chrono::steady_clock::now() + timeout;
  do {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (std::chrono::steady_clock::now() < until);
  return std::nullopt;
}

std::string child_process::output() const {
  std::ifstream in(output_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::pair<int, std::string> run_process(std::vector<std::string> argv, std::vector<std::string> env,
                                        std::chrono::milliseconds timeout, std::optional<std::string> input) {
  child_process p(std::move(argv), std::move(env), input.has_value());
  if (input) {
    p.write_stdin(*input);
    p.close_stdin();
  }
  const auto status = p.wait(timeout);
  return {status.value_or(-1), p.output()};
}

}  // namespace stargazer::test

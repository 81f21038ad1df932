#include "redis_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace stargazer::test {
namespace {

bool ping_tcp(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const char ping[] = "PING\r\n";
    if (::write(fd, ping, sizeof ping - 1) == static_cast<ssize_t>(sizeof ping - 1)) {
      char buf[16] = {};
      const auto n = ::read(fd, buf, sizeof buf - 1);
      // "-NOAUTH" also proves the server is up (tests with --requirepass).
      ok = n >= 5 && (std::string_view(buf, 5) == "+PONG" || std::string_view(buf, 5) == "-NOAU");
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("free_port: bind failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

redis_server::redis_server(redis_server_options options) : options_(std::move(options)) {
  std::string templ = (std::filesystem::temp_directory_path() / "sg-redis-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = templ;
  unix_path_ = dir_ + "/redis.sock";
  // Another process may take the port between free_port() and redis' bind: retry.
  for (int attempt = 0;; ++attempt) {
    port_ = free_port();
    try {
      start();
      return;
    } catch (const std::exception&) {
      if (attempt == 4) {
        std::filesystem::remove_all(dir_);
        throw;
      }
    }
  }
}

redis_server::~redis_server() {
  stop(std::chrono::seconds(2));
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string redis_server::url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
std::string redis_server::unix_url() const { return "unix://" + unix_path_; }

void redis_server::start() {
  if (running()) return;
  std::vector<std::string> args = {
      options_.executable, "--port", std::to_string(port_), "--bind", "127.0.0.1",
      "--unixsocket", unix_path_, "--unixsocketperm", "700", "--dir", dir_,
      "--save", "", "--appendonly", options_.appendonly ? "yes" : "no",
      "--daemonize", "no", "--logfile", dir_ + "/redis.log", "--protected-mode", "no",
      "--enable-debug-command", "yes"};
  if (!options_.config_file.empty()) args.insert(args.begin() + 1, options_.config_file);
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  // The server logs to its logfile; its stdout/stderr go to /dev/null so that a test
  // process that dies leaves no pipe held open by an orphaned server.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  const int spawn_rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (const int rc = spawn_rc; rc != 0)
    throw std::runtime_error("cannot start " + options_.executable + ": " + std::strerror(rc) +
                             " (install the redis-server package)");
  pid_ = pid;
  wait_ready(std::chrono::seconds(10));
}

void redis_server::wait_ready(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::ifstream log(dir_ + "/redis.log");
      std::stringstream text;
      text << log.rdbuf();
      throw std::runtime_error("redis-server exited during start: " + text.str());
    }
    if (ping_tcp(port_)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill();
  throw std::runtime_error("redis-server did not answer PING within the timeout");
}

void redis_server::stop(std::chrono::milliseconds grace) {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill();
}

void redis_server::kill() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string redis_cli(std::uint16_t port, const std::vector<std::string>& args) {
  std::string command = "redis-cli -p " + std::to_string(port);
  for (const auto& a : args) {
    command += " '";
    for (char c : a) {
      if (c == '\'') command += "'\\''";
      else command.push_back(c);
    }
    command += "'";
  }
  command += " 2>&1";
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
    ::pclose(pipe);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string redis_server::cli(const std::vector<std::string>& args) const { return redis_cli(port_, args); }

}  // namespace stargazer::test

#include "embedded_redis.hpp"

#include "stargazer/core/log.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>
#include <vector>

namespace stargazer::roles {

namespace fs = std::filesystem;

namespace {

std::string find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!dirs.empty()) {
    const auto colon = dirs.find(':');
    const auto dir = dirs.substr(0, colon);
    const auto candidate = fs::path(dir.empty() ? "." : std::string(dir)) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return {};
}

}  // namespace

bool redis_answers_on(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::write(fd, "PING\r\n", 6) == 6) {
    char reply[16] = {};
    ok = ::read(fd, reply, sizeof reply - 1) > 0 && std::string_view(reply).starts_with("+PONG");
  }
  ::close(fd);
  return ok;
}

embedded_redis::embedded_redis(const std::string& data_dir, std::chrono::milliseconds start_timeout) {
  const auto server = find_in_path("redis-server");
  if (server.empty())
    throw std::runtime_error(
        "redis-server is not installed: install it (apt-get install redis-server) or give --redis-url");
  std::error_code ec;
  const auto dir = fs::absolute(fs::path(data_dir) / "redis", ec);
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(fmt::format("--data-dir: cannot create '{}': {}", dir.string(), ec.message()));
  fs::permissions(dir, fs::perms::owner_all, ec);
  dir_ = dir.string();
  socket_ = (dir / "redis.sock").string();
  if (socket_.size() >= sizeof(sockaddr_un{}.sun_path))
    throw std::runtime_error(fmt::format("--data-dir: '{}' is too long for a unix socket path; use a shorter one", dir_));
  url_ = "unix://" + socket_;
  if (fs::exists(socket_)) {
    if (redis_answers_on(socket_))
      throw std::runtime_error(fmt::format(
          "--data-dir: '{}' is in use by another running Stargazer (its Redis answers on {})", data_dir, socket_));
    fs::remove(socket_, ec);  // left by a process that died
  }

  std::vector<std::string> args{server,         "--port",          "0",
                                "--unixsocket", socket_,           "--unixsocketperm", "700",
                                "--dir",        dir_,              "--appendonly",     "yes",
                                "--appendfsync", "everysec",       "--save",           "",
                                "--daemonize",  "no",              "--logfile",        (dir / "redis.log").string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(fmt::format("cannot start redis-server: {}", std::strerror(errno)));
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // dies with us, however we end
    if (::getppid() != parent) ::_exit(1);
    ::setpgid(0, 0);  // a terminal's Ctrl-C reaches stargazer, which stops Redis last
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const auto until = std::chrono::steady_clock::now() + start_timeout;
  while (!redis_answers_on(socket_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error(fmt::format("redis-server exited at start (status {}); see {}/redis.log",
                                           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), dir_));
    }
    if (std::chrono::steady_clock::now() > until) {
      stop(std::chrono::seconds(1));
      throw std::runtime_error(fmt::format("redis-server did not answer on {} within {} ms; see {}/redis.log", socket_,
                                           start_timeout.count(), dir_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  log::logger("embedded-redis").info("redis-server {} (pid {}) on {}, data in {}", server, pid_, socket_, dir_);
}

embedded_redis::~embedded_redis() { stop(); }

void embedded_redis::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      log::logger("embedded-redis").warn("redis-server did not stop within {} ms: killing it", timeout.count());
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  std::error_code ec;
  fs::remove(socket_, ec);
}

}  // namespace stargazer::roles

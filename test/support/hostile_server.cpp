#include "hostile_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace stargazer::test {
namespace {

using steady = std::chrono::steady_clock;

constexpr std::string_view huge_header = "$1099511627776\r\n";
constexpr std::size_t junk_chunk = 64 * 1024;
constexpr int junk_interval_ms = 20;
constexpr int drain_ms = 1000;
constexpr std::size_t max_line = 64 * 1024;

std::runtime_error sys_error(const std::string& what) {
  return std::runtime_error("hostile_server: " + what + ": " + std::strerror(errno));
}

// Reads "<prefix><integer>\r\n" at buf[pos]. 1 ok (pos moved past it), 0 incomplete, -1 error.
int read_number_line(std::string_view buf, std::size_t& pos, char prefix, long long& value) {
  if (pos >= buf.size()) return 0;
  if (buf[pos] != prefix) return -1;
  const auto end = buf.find("\r\n", pos);
  if (end == std::string_view::npos) return buf.size() - pos > max_line ? -1 : 0;
  const std::string_view digits = buf.substr(pos + 1, end - pos - 1);
  if (digits.empty() || digits.size() > 18) return -1;
  long long v = 0;
  bool negative = false;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i == 0 && digits[i] == '-') {
      negative = true;
      continue;
    }
    if (digits[i] < '0' || digits[i] > '9') return -1;
    v = v * 10 + (digits[i] - '0');
  }
  value = negative ? -v : v;
  pos = end + 2;
  return 1;
}

// Parses one command at the start of buf (a RESP array of bulk strings, or an inline
// command). 1 parsed (`consumed` bytes, `args` may be empty), 0 incomplete, -1 error.
int parse_command(std::string_view buf, std::size_t& consumed, std::vector<std::string>& args) {
  args.clear();
  if (buf.empty()) return 0;
  if (buf[0] != '*') {
    const auto end = buf.find('\n');
    if (end == std::string_view::npos) return buf.size() > max_line ? -1 : 0;
    std::string_view line = buf.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ') ++i;
      if (i > start) args.emplace_back(line.substr(start, i - start));
    }
    consumed = end + 1;
    return 1;
  }
  std::size_t pos = 0;
  long long count = 0;
  if (const int r = read_number_line(buf, pos, '*', count); r != 1) return r;
  if (count > 1024 * 1024) return -1;
  for (long long k = 0; k < count; ++k) {
    long long len = 0;
    if (const int r = read_number_line(buf, pos, '$', len); r != 1) return r;
    if (len < 0 || len > 512LL * 1024 * 1024) return -1;
    const auto n = static_cast<std::size_t>(len);
    if (buf.size() - pos < n + 2) return 0;
    if (buf.substr(pos + n, 2) != "\r\n") return -1;
    args.emplace_back(buf.substr(pos, n));
    pos += n + 2;
  }
  consumed = pos;
  return 1;
}

std::string upper(std::string s) {
  for (auto& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

}  // namespace

std::string_view to_string(hostile_behaviour behaviour) {
  switch (behaviour) {
    case hostile_behaviour::malformed: return "malformed";
    case hostile_behaviour::truncated: return "truncated";
    case hostile_behaviour::huge_length: return "huge_length";
    case hostile_behaviour::deep_nesting: return "deep_nesting";
    case hostile_behaviour::pong_then_close: return "pong_then_close";
    case hostile_behaviour::well_behaved: return "well_behaved";
  }
  return "unknown";
}

hostile_server::hostile_server(hostile_behaviour behaviour) : behaviour_(behaviour) {
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) throw sys_error("pipe");
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    const auto error = sys_error("socket");
    ::close(wake_pipe_[0]);
    ::close(wake_pipe_[1]);
    throw error;
  }
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // the kernel picks a free port: no race
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const auto error = sys_error("bind/listen");
    ::close(listen_fd_);
    ::close(wake_pipe_[0]);
    ::close(wake_pipe_[1]);
    throw error;
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

hostile_server::~hostile_server() { stop(); }

std::string hostile_server::address() const { return "127.0.0.1:" + std::to_string(port_); }
std::string hostile_server::url() const { return "redis://" + address(); }

bool hostile_server::wait_for_connections(std::size_t n, std::chrono::milliseconds timeout) const {
  const auto until = steady::now() + timeout;
  while (connections() < n) {
    if (steady::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

bool hostile_server::wait_for_no_open_connections(std::chrono::milliseconds timeout) const {
  const auto until = steady::now() + timeout;
  while (open_connections() != 0) {
    if (steady::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void hostile_server::stop() {
  if (stopping_.exchange(true)) return;
  // The byte is never read: the pipe stays readable and wakes every poll() for good.
  [[maybe_unused]] const auto n = ::write(wake_pipe_[1], "x", 1);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(workers_mutex_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.join();
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

int hostile_server::wait_io(int fd, short events, int timeout_ms) const {
  pollfd fds[2] = {{fd, events, 0}, {wake_pipe_[0], POLLIN, 0}};  // fd < 0: just a pause
  const auto until = steady::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int wait = timeout_ms;
    if (timeout_ms >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now()).count();
      wait = left > 0 ? static_cast<int>(left) : 0;
    }
    const int r = ::poll(fds, 2, wait);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (fds[1].revents != 0) return -1;
    if (r == 0) return 0;
    return 1;
  }
}

bool hostile_server::receive(int fd, std::string& into) const {
  for (;;) {
    if (wait_io(fd, POLLIN, -1) != 1) return false;
    char buf[16 * 1024];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      into.append(buf, static_cast<std::size_t>(n));
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    return false;
  }
}

bool hostile_server::send_all(int fd, std::string_view data) const {
  while (!data.empty()) {
    const auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (wait_io(fd, POLLOUT, -1) != 1) return false;
      continue;
    }
    return false;
  }
  return true;
}

void hostile_server::hold(int fd) const {
  std::string sink;
  while (receive(fd, sink)) sink.clear();
}

void hostile_server::close_gracefully(int fd) const {
  ::shutdown(fd, SHUT_WR);
  // Read until the client closes, so unread input does not turn our FIN into an RST that
  // could discard the bytes we sent; bounded, and cut short by stop().
  const auto until = steady::now() + std::chrono::milliseconds(drain_ms);
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now()).count();
    if (left <= 0 || wait_io(fd, POLLIN, static_cast<int>(left)) != 1) break;
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
  }
  ::close(fd);
}

void hostile_server::accept_loop() {
  while (wait_io(listen_fd_, POLLIN, -1) == 1) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN, ECONNABORTED, EMFILE...: poll again
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ++open_;
    ++connections_;
    const auto behaviour = behaviour_.load();
    std::lock_guard lock(workers_mutex_);
    workers_.emplace_back([this, fd, behaviour] { serve(fd, behaviour); });
  }
}

void hostile_server::serve(int fd, hostile_behaviour behaviour) {
  std::string in;
  if (!receive(fd, in)) {
    ::close(fd);
    --open_;
    return;
  }
  switch (behaviour) {
    case hostile_behaviour::malformed:
      while (send_all(fd, "?garbage\r\n") && receive(fd, in)) in.clear();
      ::close(fd);
      break;
    case hostile_behaviour::truncated:
      send_all(fd, "$10\r\nabc");
      close_gracefully(fd);
      break;
    case hostile_behaviour::huge_length: {
      if (send_all(fd, huge_header)) {
        const std::string junk(junk_chunk, 'x');
        bool ok = true;
        for (std::size_t sent = 0; ok && sent < huge_junk_cap; sent += junk.size())
          ok = wait_io(-1, 0, junk_interval_ms) == 0 && send_all(fd, junk);
        if (ok) hold(fd);
      }
      ::close(fd);
      break;
    }
    case hostile_behaviour::deep_nesting: {
      std::string reply;
      for (int i = 0; i < 9; ++i) reply += "*1\r\n";
      reply += ":1\r\n";
      if (send_all(fd, reply)) hold(fd);
      ::close(fd);
      break;
    }
    case hostile_behaviour::pong_then_close:
      send_all(fd, "+PONG\r\n");
      close_gracefully(fd);
      break;
    case hostile_behaviour::well_behaved:
      serve_well_behaved(fd, std::move(in));  // closes fd
      break;
  }
  --open_;
}

void hostile_server::serve_well_behaved(int fd, std::string in) {
  std::vector<std::string> args;
  for (;;) {
    std::string replies;
    std::size_t offset = 0;
    bool quit = false, error = false;
    while (!quit && !error) {
      std::size_t consumed = 0;
      const int r = parse_command(std::string_view(in).substr(offset), consumed, args);
      if (r == 0) break;
      if (r < 0) {
        replies += "-ERR Protocol error\r\n";
        error = true;
        break;
      }
      offset += consumed;
      if (args.empty()) continue;
      const std::string name = upper(args[0]);
      if (name == "PING") {
        replies += "+PONG\r\n";
      } else {
        replies += "+OK\r\n";
        quit = name == "QUIT";
      }
    }
    in.erase(0, offset);
    if (!send_all(fd, replies)) break;
    if (quit || error) {
      close_gracefully(fd);
      return;
    }
    if (!receive(fd, in)) break;
  }
  ::close(fd);
}

}  // namespace stargazer::test

#pragma once
// A fake Redis on a free loopback port that misbehaves on purpose, for testing how a
// client survives protocol errors, truncation, absurd lengths, deep nesting and dropped
// connections. Plain POSIX sockets: one accept thread, one thread per connection, all
// woken by a pipe and joined in stop()/the destructor.
//
// Each connection takes the behaviour current when it is accepted, then waits for the
// client's first bytes before answering:
//   malformed        "?garbage\r\n" for every chunk received; open until the client closes.
//   truncated        "$10\r\nabc", then close.
//   huge_length      "$1099511627776\r\n", then junk bytes (64 KiB every 20 ms) up to
//                    huge_junk_cap (4 MiB), then hold the connection until the client closes.
//   deep_nesting     "*1\r\n" x 9 then ":1\r\n"; open until the client closes.
//   pong_then_close  "+PONG\r\n", then close.
//   well_behaved     parses RESP arrays of bulk strings (and inline commands) and answers
//                    each command: "+PONG\r\n" to PING, "+OK\r\n" to anything else (QUIT
//                    closes after its +OK); "-ERR ..." and close on a protocol error.
// "close" means shutdown(SHUT_WR) and drain, so the client reads all bytes, then EOF.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace stargazer::test {

enum class hostile_behaviour { malformed, truncated, huge_length, deep_nesting, pong_then_close, well_behaved };

std::string_view to_string(hostile_behaviour behaviour);

class hostile_server {
public:
  static constexpr std::size_t huge_junk_cap = 4 * 1024 * 1024;

  explicit hostile_server(hostile_behaviour behaviour = hostile_behaviour::well_behaved);
  ~hostile_server();
  hostile_server(const hostile_server&) = delete;
  hostile_server& operator=(const hostile_server&) = delete;

  // Applies to connections accepted afterwards.
  void set_behaviour(hostile_behaviour behaviour) { behaviour_.store(behaviour); }
  hostile_behaviour behaviour() const { return behaviour_.load(); }

  std::uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:<port>"
  std::string url() const;      // "redis://127.0.0.1:<port>"

  // Connections accepted so far / currently open on the server side.
  std::size_t connections() const { return connections_.load(); }
  std::size_t open_connections() const { return open_.load(); }
  // Polls until connections() >= n; false on timeout.
  bool wait_for_connections(std::size_t n, std::chrono::milliseconds timeout) const;
  // Polls until open_connections() == 0 (e.g. the client dropped a bad connection).
  bool wait_for_no_open_connections(std::chrono::milliseconds timeout) const;

  // Closes the listener and every connection, joins all threads. Idempotent.
  void stop();

private:
  void accept_loop();
  void serve(int fd, hostile_behaviour behaviour);

  // Waits for `events` on fd or for stop(); 1 ready, 0 timeout, -1 stopped/error.
  int wait_io(int fd, short events, int timeout_ms) const;
  // Appends what arrives; false on EOF, error or stop.
  bool receive(int fd, std::string& into) const;
  bool send_all(int fd, std::string_view data) const;
  void hold(int fd) const;            // reads and discards until EOF or stop
  void close_gracefully(int fd) const;  // shutdown(SHUT_WR), drain briefly, close
  void serve_well_behaved(int fd, std::string in);

  std::atomic<hostile_behaviour> behaviour_;
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> open_{0};
  std::atomic<bool> stopping_{false};
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex workers_mutex_;
  std::vector<std::thread> workers_;
};

}  // namespace stargazer::test

#pragma once
// A request: one or more commands encoded once, written together and answered in order.

#include "stargazer/redis/resp.hpp"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::redis {

class request {
public:
  struct options {
    // Deadline for the whole request; nullopt: the connection's command_timeout.
    std::optional<std::chrono::milliseconds> timeout;
    // Resend after a reconnect even if it had been written (only for idempotent commands).
    // Requests that were never written are always sent after a reconnect.
    bool retry_if_sent = false;
    // Fail at once with errc::not_connected instead of waiting for a connection.
    bool fail_if_disconnected = false;
  };

  request() = default;
  explicit request(options o) : options_(o) {}

  // Appends one command; each argument is a string-like or an integer.
  template <class... Args>
  request& push(Args&&... args) {
    encoder_.begin(sizeof...(Args));
    (add(std::forward<Args>(args)), ...);
    ++commands_;
    return *this;
  }
  // Appends a command given as a list (e.g. built at run time).
  request& push_range(const std::vector<std::string>& args);
  // Appends a command: `head` arguments, then the range.
  request& push_with(std::initializer_list<std::string_view> head, const std::vector<std::string>& tail);

  std::size_t commands() const { return commands_; }
  const std::string& payload() const { return encoder_.bytes(); }
  std::string take_payload() { return encoder_.take(); }
  options& opts() { return options_; }
  const options& opts() const { return options_; }

  // Subscriber mode: SUBSCRIBE-family commands get no in-order reply.
  void set_expects_replies(bool v) { expects_replies_ = v; }
  bool expects_replies() const { return expects_replies_; }

private:
  void add(std::string_view s) { encoder_.arg(s); }
  void add(const std::string& s) { encoder_.arg(std::string_view(s)); }
  void add(const char* s) { encoder_.arg(std::string_view(s)); }
  template <std::integral I>
  void add(I v) { encoder_.arg(v); }

  command_encoder encoder_;
  std::size_t commands_ = 0;
  options options_;
  bool expects_replies_ = true;
};

// A Lua script with its SHA1, computed once.
class script {
public:
  explicit script(std::string source);
  const std::string& source() const { return source_; }
  const std::string& sha1() const { return sha1_; }

private:
  std::string source_;
  std::string sha1_;
};

}  // namespace stargazer::redis

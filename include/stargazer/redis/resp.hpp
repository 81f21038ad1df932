#pragma once
// Sans-io RESP2: an encoder for commands and a parser wrapping hiredis' redisReader.
// Neither touches a socket; both are tested by feeding bytes.

#include "stargazer/redis/reply.hpp"

#include <charconv>
#include <concepts>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

struct redisReader;

namespace stargazer::redis {

struct parser_budget;

// Appends commands in RESP (arrays of bulk strings) to one buffer. Arguments are
// binary-safe strings or integers. Byte-for-byte the output of hiredis'
// redisFormatCommandArgv (checked by a unit test), without its per-command malloc.
class command_encoder {
public:
  // Starts a command of `argc` arguments; push exactly that many args next.
  void begin(std::size_t argc);
  void arg(std::string_view a);
  template <std::integral I>
  void arg(I value) {
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    arg(std::string_view(buf, static_cast<std::size_t>(end - buf)));
  }

  const std::string& bytes() const { return out_; }
  std::string take() { return std::move(out_); }
  void clear() { out_.clear(); }

private:
  void length_line(char prefix, std::size_t n);
  std::string out_;
};

// Incremental RESP2 parser. feed() bytes as they arrive, then call next() until it
// returns nullopt (needs more bytes). After an error the parser is failed for good:
// the connection must be dropped.
class resp_parser {
public:
  // `max_buffered` caps bytes held for an incomplete reply (a hostile server cannot make
  // the client buffer without bound); exceeding it is errc::reply_too_large.
  explicit resp_parser(std::size_t max_buffered = 64 * 1024 * 1024);
  ~resp_parser();
  resp_parser(const resp_parser&) = delete;
  resp_parser& operator=(const resp_parser&) = delete;

  void feed(const char* data, std::size_t size);
  // The next complete reply, nullopt when more bytes are needed or on error (see error()).
  std::optional<reply> next();
  std::error_code error() const { return error_; }
  const std::string& error_message() const { return error_message_; }
  std::size_t buffered() const;

private:
  redisReader* reader_;
  std::unique_ptr<parser_budget> budget_;
  std::size_t max_buffered_;
  std::error_code error_;
  std::string error_message_;
};

}  // namespace stargazer::redis

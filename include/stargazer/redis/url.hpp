#pragma once
// Redis connection addresses: `redis://`, `rediss://` (TLS) and `unix://` URLs.
//
//   redis://[[user]:password@]host[:port][/db]      default port 6379, db 0
//   rediss://[[user]:password@]host[:port][/db]     TLS, certificate verified by default
//   unix://[[user]:password@]/path/to/redis.sock[?db=N]
//
// User and password are percent-decoded. IPv6 hosts go in brackets: redis://[::1]:6379.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stargazer::redis {

enum class transport { tcp, tls, unix_socket };

struct address {
  transport kind = transport::tcp;
  std::string host = "127.0.0.1";  // tcp and tls
  std::uint16_t port = 6379;       // tcp and tls
  std::string path;                // unix_socket
  std::string username;            // empty: AUTH with password only (or no AUTH)
  std::string password;            // empty: no AUTH
  int database = 0;
};

// Parses `url`; on failure returns nullopt and writes a one-line reason to `error`.
std::optional<address> parse_url(std::string_view url, std::string* error = nullptr);

// The URL with its password replaced by "***", safe for logs and `config print`.
std::string redact_url(std::string_view url);

// Human-readable endpoint for logs ("127.0.0.1:6379", "unix:/run/redis.sock").
std::string describe(const address& a);

}  // namespace stargazer::redis

#pragma once
// Base URLs of the HTTP client (pure parsing).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stargazer::http {

// A base URL: http[s]://host[:port][/path]. IPv6 literals go in brackets
// (http://[::1]:8080/v1). No user info, query or fragment.
struct base_url {
  bool tls = false;
  std::string host;          // without brackets
  std::uint16_t port = 80;   // 80 or 443 unless given
  std::string path_prefix;   // "" or "/v1": no trailing slash; request targets are appended

  // The Host header: "api.example.com", "127.0.0.1:8080", "[::1]:8080".
  std::string authority() const;
  // "https://api.example.com/v1" (for logs; never holds credentials).
  std::string to_string() const;
};

// Parses `url`; on failure returns nullopt and writes a one-line reason to `error`.
std::optional<base_url> parse_base_url(std::string_view url, std::string* error = nullptr);

}  // namespace stargazer::http

#pragma once
// A blocking loopback HTTP/1.1 client on plain POSIX sockets: tests speak raw bytes to
// the server (including malformed requests) without compiling Beast into every test.

#include <chrono>
#include <cstdint>
#include <string>

namespace stargazer::test {

struct raw_response {
  int status = 0;  // 0: no parsable response
  std::string headers;
  std::string body;
  std::string raw;
};

// Sends `request_bytes` on a new connection and reads until the server closes it or
// `timeout_ms` passes. Use "Connection: close" for a single exchange.
raw_response raw_http(std::uint16_t port, const std::string& request_bytes, int timeout_ms = 5000);

// GET/POST helpers that add Host and Connection: close.
raw_response http_get(std::uint16_t port, const std::string& target);
raw_response http_request(std::uint16_t port, const std::string& method, const std::string& target,
                          const std::string& body, const std::string& extra_headers = {});

// Polls until GET `path` answers 200; false after `timeout`.
bool wait_for_http(std::uint16_t port, std::chrono::milliseconds timeout, const std::string& path = "/healthz");

// Parses the first response of `raw`.
raw_response parse_response(const std::string& raw);

}  // namespace stargazer::test

// Base URLs of the HTTP client: pure parsing, kept out of client.cpp (Beast, coroutines)
// so the fuzz build compiles it alone.
#include "stargazer/http/base_url.hpp"

#include "stargazer/core/strings.hpp"

#include <boost/asio/ip/address_v6.hpp>
#include <fmt/format.h>

#include <charconv>

namespace stargazer::http {

std::string base_url::authority() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = v6 ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80)) out += ":" + std::to_string(port);
  return out;
}

std::string base_url::to_string() const {
  return std::string(tls ? "https://" : "http://") + authority() + path_prefix;
}

std::optional<base_url> parse_base_url(std::string_view url, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<base_url> {
    if (error != nullptr) *error = std::move(message);
    return std::nullopt;
  };
  base_url out;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return fail(fmt::format("'{}' is not an http:// or https:// URL", url));
  const auto scheme = ascii_lower(url.substr(0, scheme_end));
  if (scheme == "https") out.tls = true;
  else if (scheme != "http") return fail(fmt::format("unsupported scheme '{}' (expected http or https)", scheme));
  out.port = out.tls ? 443 : 80;

  auto rest = url.substr(scheme_end + 3);
  if (rest.find_first_of("?#") != std::string_view::npos) return fail("a base URL takes no query or fragment");
  const auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) return fail("a base URL takes no user information");

  std::string_view port_text;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("unterminated IPv6 literal");
    out.host = std::string(authority.substr(1, close - 1));
    boost::system::error_code ec;
    const auto a = boost::asio::ip::make_address_v6(out.host, ec);
    if (ec) return fail(fmt::format("'{}' is not an IPv6 address", out.host));
    (void)a;
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("unexpected text after the IPv6 literal");
      port_text = after.substr(1);
      if (port_text.empty()) return fail("empty port");
    }
  } else {
    const auto colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return fail("empty port");
    }
    if (out.host.find(':') != std::string::npos) return fail("IPv6 addresses go in brackets: http://[::1]:8080");
  }
  if (out.host.empty()) return fail("the URL has no host");
  if (!port_text.empty()) {
    unsigned port = 0;
    const auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port == 0 || port > 65535)
      return fail(fmt::format("'{}' is not a port number", port_text));
    out.port = static_cast<std::uint16_t>(port);
  }
  while (path.ends_with('/')) path.remove_suffix(1);
  out.path_prefix = std::string(path);
  return out;
}

}  // namespace stargazer::http

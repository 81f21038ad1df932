#include "stargazer/redis/url.hpp"

#include "stargazer/core/strings.hpp"

#include <fmt/format.h>

#include <charconv>
#include <utility>

namespace stargazer::redis {
namespace {

bool fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && ptr == s.data() + s.size();
}

bool parse_userinfo(std::string_view userinfo, address& a, std::string* error) {
  const auto colon = userinfo.find(':');
  auto user = percent_decode(userinfo.substr(0, colon));
  if (!user) return fail(error, "bad percent-encoding in the user name");
  a.username = *user;
  if (colon != std::string_view::npos) {
    auto pass = percent_decode(userinfo.substr(colon + 1));
    if (!pass) return fail(error, "bad percent-encoding in the password");
    a.password = *pass;
  } else if (!a.username.empty()) {
    // redis://secret@host is the common shorthand for a password without a user.
    a.password = std::exchange(a.username, {});
  }
  return true;
}

bool parse_db(std::string_view s, address& a, std::string* error) {
  if (s.empty()) return true;
  if (!parse_int(s, a.database) || a.database < 0)
    return fail(error, fmt::format("database must be a non-negative integer, got '{}'", s));
  return true;
}

}  // namespace

std::optional<address> parse_url(std::string_view url, std::string* error) {
  address a;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    fail(error, fmt::format("'{}' is not a URL (expected redis://, rediss:// or unix://)", redact_url(url)));
    return std::nullopt;
  }
  const auto scheme = url.substr(0, scheme_end);
  auto rest = url.substr(scheme_end + 3);
  if (scheme == "redis") a.kind = transport::tcp;
  else if (scheme == "rediss") a.kind = transport::tls;
  else if (scheme == "unix") a.kind = transport::unix_socket;
  else {
    fail(error, fmt::format("unsupported scheme '{}' (expected redis, rediss or unix)", scheme));
    return std::nullopt;
  }

  std::string_view query;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }

  // userinfo ends at the last '@' so that passwords may contain '@' when not encoded.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    if (!parse_userinfo(rest.substr(0, at), a, error)) return std::nullopt;
    rest = rest.substr(at + 1);
  }

  std::string_view db_text;
  // Query parameters: db=N (mainly for unix sockets).
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (param.starts_with("db=")) db_text = param.substr(3);
    else {
      fail(error, fmt::format("unknown URL parameter '{}'", param));
      return std::nullopt;
    }
  }

  if (a.kind == transport::unix_socket) {
    if (rest.empty() || rest.front() != '/') {
      fail(error, "unix:// URL needs an absolute socket path, e.g. unix:///run/redis.sock");
      return std::nullopt;
    }
    a.path = std::string(rest);
    a.host.clear();
    a.port = 0;
  } else {
    const auto slash = rest.find('/');
    auto hostport = rest.substr(0, slash);
    if (slash != std::string_view::npos) {
      if (!db_text.empty()) {
        fail(error, "database given twice (path and ?db=)");
        return std::nullopt;
      }
      db_text = rest.substr(slash + 1);
    }
    std::string_view port_text;
    if (hostport.starts_with('[')) {
      const auto close = hostport.find(']');
      if (close == std::string_view::npos) {
        fail(error, "unterminated '[' in IPv6 host");
        return std::nullopt;
      }
      a.host = std::string(hostport.substr(1, close - 1));
      const auto after = hostport.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':') {
          fail(error, "expected ':' after IPv6 host");
          return std::nullopt;
        }
        port_text = after.substr(1);
      }
    } else {
      const auto colon = hostport.rfind(':');
      a.host = std::string(hostport.substr(0, colon));
      if (colon != std::string_view::npos) port_text = hostport.substr(colon + 1);
    }
    if (a.host.empty()) {
      fail(error, "missing host");
      return std::nullopt;
    }
    if (!port_text.empty()) {
      unsigned port = 0;
      if (!parse_int(port_text, port) || port == 0 || port > 65535) {
        fail(error, fmt::format("port must be 1-65535, got '{}'", port_text));
        return std::nullopt;
      }
      a.port = static_cast<std::uint16_t>(port);
    }
  }
  if (!parse_db(db_text, a, error)) return std::nullopt;
  return a;
}

std::string redact_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const auto authority_start = scheme_end + 3;
  const auto at = url.rfind('@');
  if (at == std::string_view::npos || at < authority_start) return std::string(url);
  const auto userinfo = url.substr(authority_start, at - authority_start);
  const auto colon = userinfo.find(':');
  std::string out(url.substr(0, authority_start));
  if (colon == std::string_view::npos) out += "***";
  else {
    out += userinfo.substr(0, colon);
    out += ":***";
  }
  out += url.substr(at);
  return out;
}

std::string describe(const address& a) {
  if (a.kind == transport::unix_socket) return "unix:" + a.path;
  const bool v6 = a.host.find(':') != std::string::npos;
  return fmt::format("{}{}{}{}:{}", a.kind == transport::tls ? "tls:" : "", v6 ? "[" : "", a.host,
                     v6 ? "]" : "", a.port);
}

}  // namespace stargazer::redis

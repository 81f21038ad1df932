#include "stargazer/http/trusted_proxies.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <charconv>

namespace stargazer::http {

namespace ip = boost::asio::ip;

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<ip::address> parse_address(std::string_view text) {
  boost::system::error_code ec;
  const auto a = ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

// The address as 16 bytes, IPv4 mapped into IPv6, so one network list serves both.
std::array<unsigned char, 16> bytes_of(const ip::address& a) {
  return a.is_v4() ? ip::make_address_v6(ip::v4_mapped, a.to_v4()).to_bytes() : a.to_v6().to_bytes();
}

// An X-Forwarded-For entry: an address, "[v6]" or "[v6]:port", or "v4:port" (some proxies add the port).
std::optional<ip::address> parse_forwarded(std::string_view entry) {
  entry = trim(entry);
  if (entry.starts_with('[')) {
    const auto close = entry.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    entry = entry.substr(1, close - 1);
  } else if (const auto colon = entry.find(':');
             colon != std::string_view::npos && entry.rfind(':') == colon) {
    entry = entry.substr(0, colon);
  }
  return parse_address(entry);
}

}  // namespace

std::optional<std::string> canonical_address(std::string_view address) {
  const auto a = parse_address(address);
  if (!a) return std::nullopt;
  return a->to_string();
}

std::optional<trusted_proxies> trusted_proxies::parse(const std::vector<std::string>& items,
                                                      std::string* error) {
  trusted_proxies out;
  for (const auto& raw : items) {
    const auto item = trim(raw);
    const auto slash = item.find('/');
    const auto a = parse_address(item.substr(0, slash));
    unsigned prefix = a && a->is_v4() ? 32 : 128;
    if (a && slash != std::string_view::npos) {
      const auto bits = item.substr(slash + 1);
      const auto [ptr, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
      if (ec != std::errc{} || ptr != bits.data() + bits.size() || bits.empty() ||
          prefix > (a->is_v4() ? 32u : 128u)) {
        if (error) *error = "'" + std::string(item) + "' has a bad prefix length";
        return std::nullopt;
      }
    }
    if (!a) {
      if (error) *error = "'" + std::string(item) + "' is not an IP address or CIDR network";
      return std::nullopt;
    }
    out.networks_.push_back({bytes_of(*a), a->is_v4() ? prefix + 96 : prefix});
  }
  return out;
}

bool trusted_proxies::contains(const std::array<unsigned char, 16>& address) const {
  for (const auto& n : networks_) {
    const auto whole = n.prefix / 8;
    const auto rest = n.prefix % 8;
    if (!std::equal(n.bytes.begin(), n.bytes.begin() + whole, address.begin())) continue;
    const auto mask = static_cast<unsigned char>(0xff00u >> rest);
    if (rest == 0 || (n.bytes[whole] & mask) == (address[whole] & mask)) return true;
  }
  return false;
}

bool trusted_proxies::contains(std::string_view address) const {
  const auto a = parse_address(address);
  return a && contains(bytes_of(*a));
}

std::string trusted_proxies::client_of(std::string_view peer, std::string_view forwarded_for) const {
  const auto peer_address = parse_address(peer);
  if (!peer_address) return std::string(peer);
  auto client = *peer_address;
  if (!contains(bytes_of(client))) return client.to_string();
  // Right to left: each entry is the peer the proxy right of it saw.
  for (auto end = forwarded_for.size(); !trim(forwarded_for.substr(0, end)).empty();) {
    const auto comma = forwarded_for.rfind(',', end == 0 ? 0 : end - 1);
    const auto start = comma == std::string_view::npos ? 0 : comma + 1;
    const auto entry = forwarded_for.substr(start, end - start);
    end = comma == std::string_view::npos ? 0 : comma;
    if (trim(entry).empty()) continue;  // "a,,b": an empty list element (RFC 9110 5.6.1)
    const auto hop = parse_forwarded(entry);
    if (!hop) break;
    client = *hop;
    if (!contains(bytes_of(client))) break;
  }
  return client.to_string();
}

}  // namespace stargazer::http

#pragma once
// Which client a request comes from when reverse proxies stand in front of the server
// (pure: textual addresses in, a textual address out).

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::http {

// `address` (an IPv4 or IPv6 literal) in canonical text, an IPv4-mapped IPv6 address (as
// a dual-stack socket reports IPv4 peers) as plain IPv4; nullopt when it is not an address.
std::optional<std::string> canonical_address(std::string_view address);

// The addresses and CIDR networks of --http-trusted-proxies: connections from them are
// reverse proxies, whose X-Forwarded-For the server believes. IPv4 networks also match
// IPv4-mapped IPv6 addresses.
class trusted_proxies {
public:
  trusted_proxies() = default;  // trusts no one

  // Items like "10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8" (spaces around are ignored).
  // On failure returns nullopt and writes a one-line reason naming the item to `error`.
  static std::optional<trusted_proxies> parse(const std::vector<std::string>& items,
                                              std::string* error = nullptr);

  bool empty() const { return networks_.empty(); }
  bool contains(std::string_view address) const;  // false for what is not an address

  // The canonical address a request is attributed to. `forwarded_for` is its
  // X-Forwarded-For (several header lines joined by commas). A peer that is not trusted
  // is the client whatever it sends. A trusted peer's list is read from the right, where
  // each proxy appended the address it saw: the first entry that is not itself a trusted
  // proxy is the client; what lies left of it is whatever that client claimed. When every
  // entry is trusted, the left-most; when an entry is not an address (a proxy's
  // "unknown"), the trusted hop right of it; without entries, the peer.
  std::string client_of(std::string_view peer, std::string_view forwarded_for) const;

private:
  struct network {
    std::array<unsigned char, 16> bytes{};  // IPv6; IPv4 as ::ffff:a.b.c.d
    unsigned prefix = 0;                    // leading bits that must match
  };
  bool contains(const std::array<unsigned char, 16>& address) const;

  std::vector<network> networks_;
};

}  // namespace stargazer::http

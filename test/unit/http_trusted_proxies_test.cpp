// http::trusted_proxies: parsing --http-trusted-proxies and attributing requests to clients.

#include "stargazer/http/trusted_proxies.hpp"

#include <catch2/catch.hpp>

using namespace stargazer;

namespace {

http::trusted_proxies proxies(const std::vector<std::string>& items) {
  auto p = http::trusted_proxies::parse(items);
  REQUIRE(p);
  return *p;
}

}  // namespace

TEST_CASE("trusted proxies: addresses and CIDR networks, IPv4 matching IPv4-mapped IPv6", "[http]") {
  const auto p = proxies({"10.0.0.0/8", " 192.168.1.7 ", "fd00::/8", "172.16.0.0/12"});
  CHECK(p.contains("10.1.2.3"));
  CHECK(p.contains("::ffff:10.1.2.3"));
  CHECK(p.contains("192.168.1.7"));
  CHECK_FALSE(p.contains("192.168.1.8"));
  CHECK(p.contains("fd12::1"));
  CHECK_FALSE(p.contains("fe80::1"));
  CHECK(p.contains("172.31.255.255"));
  CHECK_FALSE(p.contains("172.32.0.0"));
  CHECK_FALSE(p.contains("not an address"));
  CHECK(proxies({"0.0.0.0/0"}).contains("203.0.113.9"));
  CHECK_FALSE(proxies({"0.0.0.0/0"}).contains("2001:db8::1"));
  CHECK(http::trusted_proxies{}.empty());
}

TEST_CASE("trusted proxies: what parse refuses names the item", "[http]") {
  for (const char* bad :
       {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/8x", "proxy.local", "", "10.0.0.256"}) {
    INFO(bad);
    std::string error;
    CHECK_FALSE(http::trusted_proxies::parse({bad}, &error));
    CHECK(error.find("'") != std::string::npos);
  }
}

TEST_CASE("trusted proxies: the client is the right-most X-Forwarded-For entry that is not a proxy",
          "[http]") {
  const auto p = proxies({"10.0.0.0/8"});
  // An untrusted peer is the client whatever it claims.
  CHECK(p.client_of("203.0.113.5", "198.51.100.1") == "203.0.113.5");
  CHECK(p.client_of("::ffff:203.0.113.5", "") == "203.0.113.5");
  // A trusted peer: what it appended, skipping further trusted hops; the client's own claims
  // (left of that) do not count.
  CHECK(p.client_of("10.0.0.1", "198.51.100.1") == "198.51.100.1");
  CHECK(p.client_of("10.0.0.1", "1.1.1.1, 198.51.100.1, 10.0.0.2") == "198.51.100.1");
  CHECK(p.client_of("10.0.0.1", "1.1.1.1,198.51.100.1,,10.0.0.2 ") == "198.51.100.1");
  // Ports and brackets some proxies write.
  CHECK(p.client_of("10.0.0.1", "198.51.100.1:4711") == "198.51.100.1");
  CHECK(p.client_of("10.0.0.1", "[2001:db8::7]:4711") == "2001:db8::7");
  CHECK(p.client_of("10.0.0.1", "2001:db8::7") == "2001:db8::7");
  // No list: the proxy itself; every entry trusted: the left-most; garbage: the hop right of it.
  CHECK(p.client_of("10.0.0.1", "") == "10.0.0.1");
  CHECK(p.client_of("10.0.0.1", "10.9.9.9, 10.0.0.2") == "10.9.9.9");
  CHECK(p.client_of("10.0.0.1", "198.51.100.1, unknown") == "10.0.0.1");
  CHECK(p.client_of("10.0.0.1", "198.51.100.1, unknown, 10.0.0.2") == "10.0.0.2");
}

TEST_CASE("canonical_address writes IPv4-mapped IPv6 as IPv4", "[http]") {
  CHECK(http::canonical_address("::ffff:127.0.0.1") == "127.0.0.1");
  CHECK(http::canonical_address("2001:DB8:0::1") == "2001:db8::1");
  CHECK_FALSE(http::canonical_address("localhost"));
}

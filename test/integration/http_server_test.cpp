// The HTTP server over real sockets: routing, limits, keep-alive, observability routes,
// graceful stop, slow and hostile clients.

#include "stargazer/core/metrics.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"

#include "raw_http.hpp"
#include "raw_websocket.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

// A server on a free port, run by a background thread.
struct running_server {
  explicit running_server(http::server_settings settings = {}) {
    settings.port = 0;
    routes.add(http::method::post, "/echo", http::sync_handler([](http::request& r) {
                 return http::response::text(200, r.body);
               }));
    routes.add(http::method::get, "/slow", http::handler([this](http::request&) -> boost::asio::awaitable<http::response> {
                 boost::asio::steady_timer t(io, std::chrono::milliseconds(300));
                 co_await t.async_wait(boost::asio::use_awaitable);
                 co_return http::response::json(200, R"({"slow":true})");
               }));
    // Answers once the test sets `released`; `holding` counts the requests waiting.
    routes.add(http::method::get, "/hold",
               http::handler([this](http::request&) -> boost::asio::awaitable<http::response> {
                 ++holding;
                 boost::asio::steady_timer t(io);
                 while (!released) {
                   t.expires_after(std::chrono::milliseconds(10));
                   co_await t.async_wait(boost::asio::use_awaitable);
                 }
                 --holding;
                 co_return http::response::json(200, "{}");
               }));
    routes.add(http::method::get, "/whoami", http::sync_handler([](http::request& r) {
                 return http::response::text(200, r.remote_address);
               }));
    http::add_observability_routes(routes, health, metrics);
    health.add("test", [this] { return readiness{ready.load(), ready ? "fine" : "not yet"}; });
    server = std::make_unique<http::http_server>(io, settings, routes, metrics);
    server->listen();
    port = server->port();
    thread = std::thread([this] {
      auto guard = boost::asio::make_work_guard(io);
      io.run();
    });
  }
  ~running_server() {
    released = true;
    if (thread.joinable()) stop(std::chrono::milliseconds(1000));
  }
  void stop(std::chrono::milliseconds deadline) {
    boost::asio::co_spawn(io, server->stop(deadline), [this](std::exception_ptr) { io.stop(); });
    thread.join();
  }

  boost::asio::io_context io;
  metrics::registry metrics;
  health_registry health;
  std::atomic<bool> ready{true};
  std::atomic<int> holding{0};
  std::atomic<bool> released{false};
  http::router routes;
  std::unique_ptr<http::http_server> server;
  std::uint16_t port = 0;
  std::thread thread;
};

// One loopback connection the test holds open and speaks raw bytes on.
struct raw_connection {
  explicit raw_connection(std::uint16_t port) : fd(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  raw_connection(raw_connection&& other) noexcept : fd(std::exchange(other.fd, -1)) {}
  raw_connection& operator=(raw_connection&& other) noexcept {
    if (this != &other) {
      if (fd >= 0) ::close(fd);
      fd = std::exchange(other.fd, -1);
    }
    return *this;
  }
  ~raw_connection() {
    if (fd >= 0) ::close(fd);
  }

  bool send(std::string_view bytes) const {
    while (!bytes.empty()) {
      const auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // One response: its headers and Content-Length bytes of body (or what came before the
  // close or the timeout).
  raw_response read_response(std::chrono::milliseconds timeout = 5s) const {
    std::string raw;
    const auto until = steady_clock::now() + timeout;
    char buf[4096];
    while (true) {
      if (const auto head = raw.find("\r\n\r\n"); head != std::string::npos) {
        const auto field = raw.find("Content-Length: ");
        const auto length = field < head ? std::stoul(raw.substr(field + 16)) : 0;
        if (raw.size() >= head + 4 + length) break;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now()).count();
      pollfd p{fd, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
      const auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      raw.append(buf, static_cast<std::size_t>(n));
    }
    return parse_response(raw);
  }

  // True when the server closes the connection (end of stream or reset) within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout) const {
    const auto until = steady_clock::now() + timeout;
    char buf[4096];
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now()).count();
      pollfd p{fd, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      if (::recv(fd, buf, sizeof buf, 0) <= 0) return true;
    }
  }

  int fd = -1;
};

// How many of `conns` the server closed before `until`, and when it closed the first.
struct closings {
  std::size_t count = 0;
  steady_clock::time_point first{};
};
closings wait_closed(const std::vector<raw_connection>& conns, steady_clock::time_point until) {
  std::vector<pollfd> watched;
  for (const auto& c : conns) watched.push_back({c.fd, POLLIN, 0});
  closings out;
  char buf[4096];
  while (out.count < conns.size()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now()).count();
    if (left <= 0 || ::poll(watched.data(), watched.size(), static_cast<int>(left)) <= 0) break;
    for (auto& w : watched) {
      if (w.revents == 0) continue;
      if (::recv(w.fd, buf, sizeof buf, 0) > 0) continue;  // not expected; not a close either
      if (out.count++ == 0) out.first = steady_clock::now();
      w.fd = -1;  // poll skips it from now on
    }
  }
  return out;
}

// Raises this process's soft limit of open files to its hard limit; returns the soft limit.
rlim_t raise_open_files_limit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = std::min<rlim_t>(limit.rlim_max, 1 << 20);  // "unlimited" is refused for files
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur;
}

// Retries `attempt` every 20 ms until it returns true or `timeout` passes: for what the
// server does just after the client has seen its answer (giving back a connection's slot).
template <class Attempt>
bool eventually(Attempt attempt, std::chrono::milliseconds timeout = 3s) {
  for (const auto until = steady_clock::now() + timeout; steady_clock::now() < until;) {
    if (attempt()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return attempt();
}

const std::string too_many_connections =
    R"({"error":{"code":"too_many_connections","message":"too many connections from this address"}})";

}  // namespace

TEST_CASE("the server answers, keeps connections alive and counts requests", "[http]") {
  running_server s;
  auto res = http_request(s.port, "POST", "/echo", "hello");
  CHECK(res.status == 200);
  CHECK(res.body == "hello");

  // Two pipelined requests on one keep-alive connection, then close.
  auto two = raw_http(s.port,
                      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(two.status == 200);
  std::size_t count = 0;
  for (auto pos = two.raw.find("HTTP/1.1 200"); pos != std::string::npos; pos = two.raw.find("HTTP/1.1 200", pos + 1))
    ++count;
  CHECK(count == 2);

  auto metrics = http_get(s.port, "/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.headers.find("text/plain; version=0.0.4") != std::string::npos);
  CHECK(metrics.body.find("stargazer_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2") !=
        std::string::npos);
  CHECK(metrics.body.find("stargazer_http_request_duration_seconds_count") != std::string::npos);
}

TEST_CASE("readyz reflects component readiness", "[http]") {
  running_server s;
  auto ok = http_get(s.port, "/readyz");
  CHECK(ok.status == 200);
  CHECK(ok.body == R"({"ready":true,"checks":{"test":{"ready":true,"detail":"fine"}}})");
  s.ready = false;
  auto not_ready = http_get(s.port, "/readyz");
  CHECK(not_ready.status == 503);
  CHECK(not_ready.body.find("\"ready\":false") != std::string::npos);
}

TEST_CASE("oversized bodies get 413 and oversized headers 431", "[http]") {
  http::server_settings settings;
  settings.max_body_bytes = 1024;
  settings.max_header_bytes = 2048;
  running_server s(settings);
  auto big = http_request(s.port, "POST", "/echo", std::string(4096, 'x'));
  CHECK(big.status == 413);
  CHECK(big.body.find("\"code\":") != std::string::npos);
  auto fits = http_request(s.port, "POST", "/echo", std::string(1000, 'x'));
  CHECK(fits.status == 200);
  auto headers = http_request(s.port, "GET", "/healthz", "", "X-Big: " + std::string(4096, 'h') + "\r\n");
  CHECK(headers.status == 431);
}

TEST_CASE("malformed requests get 400 and the server keeps serving", "[http]") {
  running_server s;
  auto bad = raw_http(s.port, "NOT A REQUEST\r\n\r\n");
  CHECK(bad.status == 400);
  auto smuggle = raw_http(s.port,
                          "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
  CHECK(smuggle.status == 400);
  CHECK(http_get(s.port, "/healthz").status == 200);
}

TEST_CASE("Expect: 100-continue is honoured", "[http]") {
  running_server s;
  auto res = raw_http(s.port,
                      "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
                      "Content-Length: 2\r\n\r\nok");
  CHECK(res.raw.rfind("HTTP/1.1 100 Continue", 0) == 0);
  CHECK(res.raw.find("HTTP/1.1 200 OK") != std::string::npos);
}

TEST_CASE("stop lets requests in flight finish and refuses new connections", "[http]") {
  running_server s;
  raw_response slow;
  std::thread client([&] { slow = http_get(s.port, "/slow"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  s.stop(std::chrono::milliseconds(2000));
  client.join();
  CHECK(slow.status == 200);
  CHECK(slow.body == R"({"slow":true})");
  CHECK(http_get(s.port, "/healthz").status == 0);
}

TEST_CASE("WebSocket upgrade is handed off to its route, foreign origins are refused", "[http][websocket]") {
  running_server s;
  std::atomic<int> opened{0};
  std::promise<void> added;
  boost::asio::post(s.io, [&] {
    s.server->add_websocket(
        "/ws", http::websocket_route{
                   [](http::request& req) -> std::optional<http::response> {
                     if (req.header("origin") != "http://localhost")
                       return http::response::error(403, "forbidden_origin", "origin not allowed");
                     return std::nullopt;
                   },
                   [&](std::shared_ptr<http::websocket_session> ws) {
                     ++opened;
                     std::weak_ptr<http::websocket_session> weak = ws;
                     ws->on_message = [weak](std::string_view text) {
                       if (auto self = weak.lock()) self->send("echo: " + std::string(text));
                     };
                   }});
    added.set_value();
  });
  added.get_future().wait();

  raw_websocket ok;
  const auto head = ok.handshake(s.port, "/ws", "http://localhost");
  CHECK(head.rfind("HTTP/1.1 101", 0) == 0);
  CHECK(head.find("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != std::string::npos);  // RFC 6455 sample accept key
  ok.send_text("hi");
  CHECK(ok.read_text() == "echo: hi");
  CHECK(opened == 1);

  raw_websocket evil;
  CHECK(evil.handshake(s.port, "/ws", "http://evil.example").rfind("HTTP/1.1 403", 0) == 0);
  CHECK(opened == 1);
}

TEST_CASE("connections that never finish their headers are closed after header_timeout and starve no one",
          "[http][slow]") {
  // Each connection is two descriptors here: the test's and the server's.
  const auto files = raise_open_files_limit();
  const std::size_t count = std::min<std::size_t>(3000, files > 512 ? (files - 256) / 2 : 0);
  if (count < 3000)
    WARN("RLIMIT_NOFILE is " << files << ": " << count << " stalled connections instead of 3000");
  REQUIRE(count >= 100);
  http::server_settings settings;
  settings.header_timeout = 2s;
  settings.idle_timeout = 30s;
  settings.max_connections_per_ip = 0;  // every one comes from 127.0.0.1
  running_server s(settings);

  std::vector<raw_connection> stalled;
  stalled.reserve(count);
  const auto first_connected = steady_clock::now();
  for (std::size_t i = 0; i < count; ++i) {
    const auto& c = stalled.emplace_back(s.port);
    REQUIRE(c.fd >= 0);
    REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Never-Ends: "));
  }
  const auto last_sent = steady_clock::now();

  // Meanwhile a normal client is served, well before any stalled one could be cut off.
  const auto asked = steady_clock::now();
  CHECK(http_get(s.port, "/healthz").status == 200);
  CHECK(steady_clock::now() - asked < settings.header_timeout);

  const auto closed = wait_closed(stalled, last_sent + settings.header_timeout + 3s);
  CHECK(closed.count == count);
  // By the header deadline, which starts at accept, not by anything earlier.
  CHECK(closed.first - first_connected >= settings.header_timeout - 100ms);

  const auto metrics = http_get(s.port, "/metrics");
  CHECK(metrics.body.find("stargazer_http_header_timeouts_total " + std::to_string(count) + "\n") !=
        std::string::npos);
  CHECK(http_get(s.port, "/healthz").status == 200);
}

TEST_CASE("a kept-alive connection waits idle_timeout for a request, then its headers then get header_timeout",
          "[http][slow]") {
  http::server_settings settings;
  settings.header_timeout = 1s;
  settings.idle_timeout = 30s;
  running_server s(settings);
  const raw_connection silent(s.port);  // connects and never sends: a header that never starts
  const raw_connection c(s.port);
  REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  CHECK(c.read_response().status == 200);
  std::this_thread::sleep_for(1500ms);  // idle beyond header_timeout, within idle_timeout
  REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  CHECK(c.read_response().status == 200);

  const auto started = steady_clock::now();
  REQUIRE(c.send("GET /healthz HTTP/1.1\r\nHo"));
  CHECK(c.closed_within(settings.header_timeout + 3s));
  CHECK(steady_clock::now() - started >= settings.header_timeout - 100ms);
  CHECK(silent.closed_within(3s));
}

TEST_CASE("one address cannot hold more than max_connections_per_ip connections", "[http]") {
  http::server_settings settings;
  settings.max_connections_per_ip = 5;
  running_server s(settings);
  std::vector<raw_connection> held;
  for (int i = 0; i < 5; ++i) REQUIRE(held.emplace_back(s.port).fd >= 0);

  // The sixth is answered at accept (before it sends anything) and closed.
  const auto refused = raw_http(s.port, "");
  CHECK(refused.status == 429);
  CHECK(refused.headers.find("Connection: close") != std::string::npos);
  CHECK(refused.body == too_many_connections);
  // The five are served as usual.
  REQUIRE(held.front().send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  CHECK(held.front().read_response().status == 200);

  // One closes: its place is given back.
  held.erase(held.begin());
  CHECK(eventually([&] { return http_get(s.port, "/healthz").status == 200; }));

  // Five again, and the count is exact: the sixth is refused once more.
  CHECK(eventually([&] {
    raw_connection c(s.port);
    if (!c.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") || c.read_response().status != 200)
      return false;
    held.push_back(std::move(c));
    return true;
  }));
  CHECK(raw_http(s.port, "").status == 429);
}

TEST_CASE("behind a trusted proxy, requests count for the client X-Forwarded-For names", "[http]") {
  http::server_settings settings;
  settings.max_connections_per_ip = 2;
  settings.proxies = *http::trusted_proxies::parse({"127.0.0.0/8"});
  running_server s(settings);
  const auto via_proxy = [&](const std::string& target, const std::string& forwarded_for) {
    return raw_http(s.port, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
                                (forwarded_for.empty() ? "" : "X-Forwarded-For: " + forwarded_for + "\r\n") +
                                "\r\n");
  };

  // Two requests of 203.0.113.7 in flight: its cap.
  std::vector<raw_connection> proxy;
  for (int i = 0; i < 2; ++i) {
    REQUIRE(proxy.emplace_back(s.port).fd >= 0);
    REQUIRE(
        proxy.back().send("GET /hold HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"));
  }
  REQUIRE(eventually([&] { return s.holding == 2; }));

  // The proxy's own connections are not capped (this is its third and more); its requests are.
  const auto third = via_proxy("/whoami", "203.0.113.7");
  CHECK(third.status == 429);
  CHECK(third.body == too_many_connections);
  // The client is the right-most address that is not a trusted proxy; what it claims left
  // of that does not count.
  CHECK(via_proxy("/whoami", "198.51.100.1, 203.0.113.7").status == 429);
  auto other = via_proxy("/whoami", "203.0.113.7, 198.51.100.1");
  CHECK(other.status == 200);
  CHECK(other.body == "198.51.100.1");
  other = via_proxy("/whoami", "203.0.113.8, 127.0.0.5");
  CHECK(other.status == 200);
  CHECK(other.body == "203.0.113.8");
  other = via_proxy("/whoami", "");
  CHECK(other.status == 200);
  CHECK(other.body == "127.0.0.1");

  s.released = true;
  for (const auto& c : proxy) CHECK(c.read_response().status == 200);
  CHECK(eventually([&] { return via_proxy("/whoami", "203.0.113.7").body == "203.0.113.7"; }));
}

TEST_CASE("X-Forwarded-For from a peer that is not a trusted proxy is ignored", "[http]") {
  http::server_settings settings;
  settings.max_connections_per_ip = 2;
  settings.proxies = *http::trusted_proxies::parse({"10.0.0.0/8"});
  running_server s(settings);
  const raw_connection a(s.port);
  const raw_connection b(s.port);
  REQUIRE(a.send("GET /whoami HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"));
  const auto who = a.read_response();
  CHECK(who.status == 200);
  CHECK(who.body == "127.0.0.1");
  // A third connection claiming another client is still 127.0.0.1's third.
  const auto spoofed = raw_http(s.port,
                                "GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                                "X-Forwarded-For: 203.0.113.9\r\n\r\n");
  CHECK(spoofed.status == 429);
}

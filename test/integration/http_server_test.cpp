// The HTTP server over real sockets: routing, limits, keep-alive, observability routes,
// graceful stop.

#include "stargazer/core/metrics.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"

#include "raw_http.hpp"
#include "raw_websocket.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <future>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;

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
  http::router routes;
  std::unique_ptr<http::http_server> server;
  std::uint16_t port = 0;
  std::thread thread;
};

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

// The HTTP client over real sockets: the project's own server (via the fake LLM server),
// keep-alive reuse and the server closing idle connections, a reused connection closed
// as the request arrives (sent again) or mid-response (not), deadlines, the size limit,
// and HTTPS against `openssl s_server` with the run's test certificates.

#include "stargazer/core/error.hpp"
#include "stargazer/http/client.hpp"

#include "child_process.hpp"
#include "fake_llm_server.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"
#include "tls_material.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <functional>
#include <future>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

http::base_url url_of(const std::string& text) {
  std::string error;
  auto u = http::parse_base_url(text, &error);
  INFO(error);
  REQUIRE(u);
  return *u;
}

http::request post(std::string body) {
  http::request r;
  r.verb = http::method::post;
  r.target = "/chat/completions";
  r.headers = {{"content-type", "application/json"}};
  r.body = std::move(body);
  return r;
}

http::request get(std::string target) {
  http::request r;
  r.target = std::move(target);
  return r;
}

const std::string chat_body = R"({"model":"m","messages":[{"role":"user","content":"ping pong"}]})";

// A loopback listener whose connections are handled by `script` on its own thread, with
// blocking POSIX calls: for byte-exact server behaviour the project's server never shows.
class scripted_server {
public:
  explicit scripted_server(std::function<void(int listen_fd)> script) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 8) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, script = std::move(script)] { script(fd_); });
  }
  ~scripted_server() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes a blocked accept
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Reads one request head (requests here have no body); empty on EOF.
  static std::string read_head(int fd) {
    std::string in;
    char buf[1024];
    while (in.find("\r\n\r\n") == std::string::npos) {
      const auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return {};
      in.append(buf, static_cast<std::size_t>(n));
    }
    return in;
  }
  static void send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace

TEST_CASE("http client: requests go to the base path, and keep-alive connections are reused", "[http_client]") {
  fake_llm_server fake;
  asio::io_context io;
  http::client client(io.get_executor(), url_of(fake.base_url()));
  for (int i = 0; i < 3; ++i) {
    auto res = run_coro(io, client.send(post(chat_body)));
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->content_type == "application/json");
    CHECK(res->header("Content-Type") == "application/json");
    CHECK(res->body.find(R"("content":"ping pong")") != std::string::npos);
  }
  CHECK(client.stats().connections_opened == 1);
  CHECK(client.stats().connections_reused == 2);
  CHECK(fake.open_connections() == 1);
  CHECK(fake.requests().at(0).body == chat_body);

  // Anything other than the route: the server's 404 is a response, not an error.
  auto missing = run_coro(io, client.send(get("/nowhere")));
  REQUIRE(missing);
  CHECK(missing->status == 404);
}

TEST_CASE("http client: a connection the server closed while idle is not reused", "[http_client]") {
  fake_llm_options options;
  options.server.idle_timeout = 100ms;
  fake_llm_server fake(options);
  asio::io_context io;
  http::client client(io.get_executor(), url_of(fake.base_url()));
  REQUIRE(run_coro(io, client.send(post(chat_body))));
  run_coro(io, sleep_for(400ms));  // the server closes the idle connection meanwhile
  auto res = run_coro(io, client.send(post(chat_body)));
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(client.stats().connections_opened == 2);
}

TEST_CASE("http client: a pooled connection closed as the request arrives is retried once on a new one",
          "[http_client]") {
  scripted_server server([](int listen_fd) {
    const int first = ::accept(listen_fd, nullptr, nullptr);
    if (first < 0) return;
    scripted_server::read_head(first);
    scripted_server::send_all(first, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
    scripted_server::read_head(first);  // the second request: closed without an answer
    ::close(first);
    const int second = ::accept(listen_fd, nullptr, nullptr);
    if (second < 0) return;
    scripted_server::read_head(second);
    scripted_server::send_all(second, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond");
    scripted_server::read_head(second);
    ::close(second);
  });
  asio::io_context io;
  http::client client(io.get_executor(), url_of(server.url()));
  auto a = run_coro(io, client.send(get("/a")));
  REQUIRE(a);
  CHECK(a->body == "first");
  auto b = run_coro(io, client.send(get("/b")));
  REQUIRE(b);
  CHECK(b->body == "second");
  CHECK(client.stats().connections_opened == 2);
  CHECK(client.stats().connections_reused == 1);
  CHECK(client.stats().stale_retries == 1);
}

TEST_CASE("http client: a response cut short on a pooled connection is an error, not sent again", "[http_client]") {
  scripted_server server([](int listen_fd) {
    const int fd = ::accept(listen_fd, nullptr, nullptr);
    if (fd < 0) return;
    scripted_server::read_head(fd);
    scripted_server::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    scripted_server::read_head(fd);
    scripted_server::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
    ::close(fd);
  });
  asio::io_context io;
  http::client client(io.get_executor(), url_of(server.url()));
  REQUIRE(run_coro(io, client.send(get("/a"))));
  auto b = run_coro(io, client.send(get("/b")));
  REQUIRE_FALSE(b);
  CHECK_FALSE(http::is_timeout(b.error()));
  CHECK(client.stats().stale_retries == 0);
  CHECK(client.stats().connections_opened == 1);
}

TEST_CASE("http client: a server that never answers fails with a timeout at the deadline", "[http_client]") {
  scripted_server server([](int listen_fd) {
    const int fd = ::accept(listen_fd, nullptr, nullptr);
    if (fd < 0) return;
    scripted_server::read_head(fd);
    char b;
    while (::recv(fd, &b, 1, 0) > 0) {
    }  // until the client gives up and closes
    ::close(fd);
  });
  asio::io_context io;
  http::client_settings s;
  s.response_timeout = 300ms;
  http::client client(io.get_executor(), url_of(server.url()), s);
  const auto started = std::chrono::steady_clock::now();
  auto res = run_coro(io, client.send(get("/slow")));
  const auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  REQUIRE_FALSE(res);
  CHECK(http::is_timeout(res.error()));
  CHECK(took >= 0.29);
  CHECK(took < 1.0);
}

TEST_CASE("http client: a body over the limit fails with reply_too_large", "[http_client]") {
  fake_llm_options options;
  options.fallback = [](std::string_view) { return fake_reply::reply(std::string(10'000, 'x')); };
  fake_llm_server fake(options);
  asio::io_context io;
  http::client_settings s;
  s.max_response_bytes = 4096;
  http::client client(io.get_executor(), url_of(fake.base_url()), s);
  auto res = run_coro(io, client.send(post(chat_body)));
  REQUIRE_FALSE(res);
  CHECK(res.error() == make_error_code(errc::reply_too_large));
}

TEST_CASE("http client: connection refused is a transport error", "[http_client]") {
  asio::io_context io;
  http::client client(io.get_executor(), url_of("http://127.0.0.1:" + std::to_string(free_port())));
  auto res = run_coro(io, client.send(get("/")));
  REQUIRE_FALSE(res);
  CHECK_FALSE(http::is_timeout(res.error()));
  CHECK(res.error().message().find("refused") != std::string::npos);
}

namespace {

// `openssl s_server -www` on a free port serving `cert`: answers a GET with an HTML status
// page over TLS, then closes.
struct tls_server {
  std::uint16_t port = free_port();
  child_process process;

  tls_server(const std::string& cert, const std::string& key)
      : process({"openssl", "s_server", "-accept", std::to_string(port), "-cert", cert, "-key", key, "-www",
                 "-naccept", "100"}) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (process.output().find("ACCEPT") == std::string::npos) {
      if (std::chrono::steady_clock::now() > until) FAIL("openssl s_server did not start: " << process.output());
      std::this_thread::sleep_for(10ms);
    }
  }
  std::string url(const std::string& host) const { return "https://" + host + ":" + std::to_string(port); }
};

result<http::response> fetch(const std::string& url, http::client_settings s) {
  asio::io_context io;
  s.connect_timeout = 3000ms;
  s.response_timeout = 3000ms;
  http::client client(io.get_executor(), url_of(url), s);
  return run_coro(io, client.send(get("/")));
}

}  // namespace

TEST_CASE("http client: HTTPS verifies the certificate chain and the host name", "[http_client]") {
  const auto& m = certificates();
  tls_server server(m.server_cert, m.server_key);
  http::client_settings with_ca;
  with_ca.tls_ca_file = m.ca_cert;

  SECTION("the right CA, by name (SNI) and by IP") {
    for (const auto* host : {"localhost", "127.0.0.1"}) {
      auto res = fetch(server.url(host), with_ca);
      INFO(host << ": " << (res ? "" : res.error().message()));
      REQUIRE(res);
      CHECK(res->status == 200);
      CHECK(res->body.find("s_server") != std::string::npos);
    }
  }
  SECTION("the system store does not know the test CA") {
    auto res = fetch(server.url("localhost"), {});
    REQUIRE_FALSE(res);
    CHECK_FALSE(http::is_timeout(res.error()));
    CHECK(res.error().message().find("certificate verify failed") != std::string::npos);
  }
  SECTION("verification off accepts it") {
    http::client_settings off;
    off.tls_verify = false;
    auto res = fetch(server.url("localhost"), off);
    REQUIRE(res);
    CHECK(res->status == 200);
  }
}

TEST_CASE("http client: HTTPS refuses a certificate for another host name", "[http_client]") {
  const auto& m = certificates();
  tls_server server(m.other_cert, m.other_key);  // valid chain, but for redis.example.invalid
  http::client_settings with_ca;
  with_ca.tls_ca_file = m.ca_cert;
  auto res = fetch(server.url("localhost"), with_ca);
  REQUIRE_FALSE(res);
  CHECK(res.error().message().find("certificate verify failed") != std::string::npos);
}

TEST_CASE("http client: a missing CA file is refused at construction", "[http_client]") {
  asio::io_context io;
  http::client_settings s;
  s.tls_ca_file = "/nonexistent/ca.pem";
  CHECK_THROWS_AS(http::client(io.get_executor(), url_of("https://localhost"), s), std::system_error);
}

namespace {

const std::string chunked_head =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

std::string chunk(std::string_view data) { return fmt::format("{:x}\r\n{}\r\n", data.size(), data); }

}  // namespace

TEST_CASE("http client: stream() hands a chunked body over piece by piece as it arrives", "[http_client]") {
  std::promise<void> first_seen;
  auto first_seen_future = first_seen.get_future();
  scripted_server server([&](int listen_fd) {
    const int fd = ::accept(listen_fd, nullptr, nullptr);
    if (fd < 0) return;
    scripted_server::read_head(fd);
    scripted_server::send_all(fd, chunked_head + chunk("data: one\n\n"));
    // The rest only once the client has seen the first piece: a client that waited for
    // the whole body would wait forever.
    if (first_seen_future.wait_for(5s) == std::future_status::ready)
      scripted_server::send_all(fd, chunk("data: two\n\n") + "0\r\n\r\n");
    ::close(fd);
  });
  asio::io_context io;
  http::client client(io.get_executor(), url_of(server.url()));
  unsigned head_status = 0;
  std::string body;
  bool signalled = false;
  http::client::stream_handler handler;
  handler.on_head = [&](const http::response& head) {
    head_status = head.status;
    CHECK(head.content_type == "text/event-stream");
    return true;
  };
  handler.on_body = [&](std::string_view piece) {
    body.append(piece);
    if (!signalled && body.find("one") != std::string::npos) {
      signalled = true;
      first_seen.set_value();
    }
    return true;
  };
  auto res = run_coro(io, client.stream(get("/events"), std::move(handler)));
  if (!signalled) first_seen.set_value();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body.empty());
  CHECK(head_status == 200);
  CHECK(body == "data: one\n\ndata: two\n\n");
}

TEST_CASE("http client: stream() reads an error status whole, and streams a Content-Length body", "[http_client]") {
  scripted_server server([](int listen_fd) {
    for (int i = 0; i < 2; ++i) {
      const int fd = ::accept(listen_fd, nullptr, nullptr);
      if (fd < 0) return;
      scripted_server::read_head(fd);
      if (i == 0)
        scripted_server::send_all(fd, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                                      "Content-Length: 13\r\n\r\n{\"error\":403}");
      else
        scripted_server::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
      ::close(fd);
    }
  });
  asio::io_context io;
  http::client client(io.get_executor(), url_of(server.url()));
  int calls = 0;
  std::string body;
  const auto handler = [&] {
    http::client::stream_handler h;
    h.on_head = [&](const http::response&) {
      ++calls;
      return true;
    };
    h.on_body = [&](std::string_view piece) {
      body.append(piece);
      return true;
    };
    return h;
  };
  auto refused = run_coro(io, client.stream(get("/events"), handler()));
  REQUIRE(refused);
  CHECK(refused->status == 403);
  CHECK(refused->body == "{\"error\":403}");
  CHECK(calls == 0);
  auto ok = run_coro(io, client.stream(get("/events"), handler()));
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(calls == 1);
  CHECK(body == "hello");
}

TEST_CASE("http client: abort_streams() ends a stream in flight with operation_canceled", "[http_client]") {
  scripted_server server([](int listen_fd) {
    const int fd = ::accept(listen_fd, nullptr, nullptr);
    if (fd < 0) return;
    scripted_server::read_head(fd);
    scripted_server::send_all(fd, chunked_head + chunk(": hello\n\n"));
    char b;
    while (::recv(fd, &b, 1, 0) > 0) {
    }  // until the client closes
    ::close(fd);
  });
  asio::io_context io;
  http::client client(io.get_executor(), url_of(server.url()));
  http::client::stream_handler handler;
  handler.on_body = [&](std::string_view) {
    asio::post(io, [&] { client.abort_streams(); });
    return true;
  };
  const auto started = std::chrono::steady_clock::now();
  auto res = run_coro(io, client.stream(get("/events"), std::move(handler)));
  REQUIRE_FALSE(res);
  CHECK(res.error() == std::make_error_code(std::errc::operation_canceled));
  CHECK(std::chrono::steady_clock::now() - started < 2s);
}

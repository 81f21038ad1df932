// The Sentinel cluster and hostile-server fixtures themselves, checked with redis-cli and
// raw sockets only (no Stargazer Redis client).

#include "hostile_server.hpp"
#include "sentinel_cluster.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

// A blocking loopback client with deadline-bounded reads.
class raw_client {
public:
  explicit raw_client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~raw_client() { close(); }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  void send(std::string_view data) {
    while (!data.empty()) {
      const auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      REQUIRE(n > 0);
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  // Reads until `n` bytes arrived in total, EOF, or the timeout.
  std::string read_at_least(std::size_t n, std::chrono::milliseconds timeout = 3s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    std::string out;
    while (out.size() < n && !eof_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      char buf[64 * 1024];
      const auto got = ::recv(fd_, buf, sizeof buf, 0);
      if (got <= 0) {
        eof_ = true;
        break;
      }
      out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
  }
  std::string read_until_eof(std::chrono::milliseconds timeout = 3s) {
    return read_at_least(static_cast<std::size_t>(-1), timeout);
  }
  bool eof() const { return eof_; }

private:
  int fd_ = -1;
  bool eof_ = false;
};

const std::string ping_command = "*1\r\n$4\r\nPING\r\n";

}  // namespace

TEST_CASE("the sentinel cluster reaches quorum, reports the master and fails over", "[fixture][sentinel]") {
  const auto started = std::chrono::steady_clock::now();
  sentinel_cluster cluster;
  INFO("setup took " << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                              started)
                            .count()
                     << " ms");

  CHECK(cluster.master_name() == "mymaster");
  const auto ports = cluster.sentinel_ports();
  const auto addresses = cluster.sentinel_addresses();
  REQUIRE(ports.size() == 3);
  REQUIRE(addresses.size() == 3);
  CHECK(ports[0] != ports[1]);
  CHECK(ports[1] != ports[2]);
  CHECK(cluster.master_port() != cluster.replica_port());

  const std::string expected_master = "127.0.0.1\n" + std::to_string(cluster.master_port());
  for (std::size_t i = 0; i < ports.size(); ++i) {
    CHECK(addresses[i] == "127.0.0.1:" + std::to_string(ports[i]));
    CHECK(cluster.sentinel_cli(i, {"PING"}) == "PONG");
    CHECK_THAT(cluster.sentinel_cli(i, {"SENTINEL", "CKQUORUM", "mymaster"}), Catch::StartsWith("OK 3"));
    CHECK(sentinel_cluster::cli(ports[i], {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"}) == expected_master);
    CHECK(cluster.reported_master_port(i) == cluster.master_port());
  }
  CHECK_THAT(cluster.master_cli({"ROLE"}), Catch::StartsWith("master"));
  CHECK_THAT(cluster.replica_cli({"ROLE"}), Catch::StartsWith("slave"));
  CHECK_THAT(cluster.master_cli({"INFO", "replication"}), Catch::Contains("connected_slaves:1"));

  // Data written to the master reaches the replica (WAIT 1 replica, 2 s).
  CHECK(cluster.master_cli({"SET", "before-failover", "yes"}) == "OK");
  CHECK(cluster.master_cli({"WAIT", "1", "2000"}) == "1");
  CHECK(cluster.replica_cli({"GET", "before-failover"}) == "yes");

  const auto killed = std::chrono::steady_clock::now();
  cluster.kill_master();
  CHECK_FALSE(cluster.master().running());
  const auto new_port = cluster.wait_for_failover(10s);
  const auto failover_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed).count();
  INFO("failover took " << failover_ms << " ms");
  CHECK(new_port == cluster.replica_port());
  CHECK(failover_ms < 10000);
  CHECK_THAT(cluster.replica_cli({"ROLE"}), Catch::StartsWith("master"));
  CHECK(cluster.replica_cli({"GET", "before-failover"}) == "yes");
  CHECK(cluster.replica_cli({"SET", "after-failover", "yes"}) == "OK");
}

TEST_CASE("the sentinel cluster removes its temporary directories", "[fixture][sentinel]") {
  std::vector<std::string> dirs;
  {
    sentinel_cluster cluster("other-name");
    CHECK(cluster.master_name() == "other-name");
    CHECK_THAT(cluster.sentinel_cli(0, {"SENTINEL", "CKQUORUM", "other-name"}), Catch::StartsWith("OK"));
    dirs = {cluster.config_dir(), cluster.master().dir(), cluster.replica().dir(), cluster.sentinel(0).dir()};
    CHECK(std::filesystem::exists(cluster.config_dir() + "/sentinel-0.conf"));
    for (const auto& d : dirs) CHECK(std::filesystem::exists(d));
  }
  for (const auto& d : dirs) CHECK_FALSE(std::filesystem::exists(d));
}

TEST_CASE("the hostile server sends the scripted bytes for each behaviour", "[fixture][hostile]") {
  hostile_server server(hostile_behaviour::malformed);
  CHECK(server.port() > 0);
  CHECK(server.address() == "127.0.0.1:" + std::to_string(server.port()));
  CHECK(server.url() == "redis://127.0.0.1:" + std::to_string(server.port()));
  CHECK(server.connections() == 0);

  SECTION("malformed") {
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_at_least(10) == "?garbage\r\n");
    c.send(ping_command);  // stays open and answers garbage again
    CHECK(c.read_at_least(10) == "?garbage\r\n");
  }
  SECTION("truncated") {
    server.set_behaviour(hostile_behaviour::truncated);
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_until_eof() == "$10\r\nabc");
    CHECK(c.eof());
  }
  SECTION("huge_length") {
    server.set_behaviour(hostile_behaviour::huge_length);
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_at_least(16) == "$1099511627776\r\n");
    const std::string junk = c.read_at_least(100 * 1000);  // the first junk chunks, 64 KiB each
    CHECK(junk.size() >= 100 * 1000);
    CHECK(junk.find_first_not_of('x') == std::string::npos);
    CHECK_FALSE(c.eof());
    c.close();  // the client gives up: the server notices and closes its end
    CHECK(server.wait_for_no_open_connections(2s));
  }
  SECTION("deep_nesting") {
    server.set_behaviour(hostile_behaviour::deep_nesting);
    raw_client c(server.port());
    c.send(ping_command);
    std::string expected;
    for (int i = 0; i < 9; ++i) expected += "*1\r\n";
    expected += ":1\r\n";
    CHECK(c.read_at_least(expected.size()) == expected);
    CHECK(c.read_at_least(1, 100ms).empty());  // nothing more, and still open
    CHECK_FALSE(c.eof());
  }
  SECTION("pong_then_close") {
    server.set_behaviour(hostile_behaviour::pong_then_close);
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_until_eof() == "+PONG\r\n");
    CHECK(c.eof());
  }
  SECTION("well_behaved, command by command, pipelined and split") {
    server.set_behaviour(hostile_behaviour::well_behaved);
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_at_least(7) == "+PONG\r\n");
    c.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nping\r\n*2\r\n$3\r\nGET\r\n$1");
    CHECK(c.read_at_least(12) == "+OK\r\n+PONG\r\n");
    c.send("\r\nk\r\nPING\r\n");  // the rest of GET, then an inline command
    CHECK(c.read_at_least(12) == "+OK\r\n+PONG\r\n");
    c.send("*1\r\n$4\r\nQUIT\r\n");
    CHECK(c.read_until_eof() == "+OK\r\n");
    CHECK(c.eof());
  }
  SECTION("well_behaved answers redis-cli") {
    server.set_behaviour(hostile_behaviour::well_behaved);
    CHECK(sentinel_cluster::cli(server.port(), {"PING"}) == "PONG");
    CHECK(sentinel_cluster::cli(server.port(), {"SET", "k", "v"}) == "OK");
  }
  CHECK(server.connections() >= 1);
}

TEST_CASE("the hostile server counts connections and switches behaviour between them", "[fixture][hostile]") {
  hostile_server server(hostile_behaviour::pong_then_close);
  for (int i = 1; i <= 3; ++i) {
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_until_eof() == "+PONG\r\n");
    CHECK(server.wait_for_connections(static_cast<std::size_t>(i), 1s));
  }
  CHECK(server.connections() == 3);

  server.set_behaviour(hostile_behaviour::truncated);
  CHECK(server.behaviour() == hostile_behaviour::truncated);
  {
    raw_client c(server.port());
    c.send(ping_command);
    CHECK(c.read_until_eof() == "$10\r\nabc");
  }
  CHECK(server.connections() == 4);
  CHECK(server.wait_for_no_open_connections(2s));
  CHECK_FALSE(server.wait_for_connections(5, 50ms));
  CHECK(to_string(hostile_behaviour::huge_length) == "huge_length");
}

TEST_CASE("the hostile server stops promptly with connections still held", "[fixture][hostile]") {
  auto server = std::make_unique<hostile_server>(hostile_behaviour::huge_length);
  raw_client held(server->port());  // never reads: the server blocks on a full socket buffer
  held.send(ping_command);
  server->set_behaviour(hostile_behaviour::deep_nesting);
  raw_client nested(server->port());
  nested.send(ping_command);
  raw_client silent(server->port());  // connected, sends nothing
  REQUIRE(server->wait_for_connections(3, 1s));
  std::this_thread::sleep_for(200ms);
  CHECK(server->open_connections() == 3);

  const auto started = std::chrono::steady_clock::now();
  server.reset();
  const auto stop_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  CHECK(stop_ms < 500);
  CHECK(silent.read_until_eof(1s).empty());
  CHECK(silent.eof());
}

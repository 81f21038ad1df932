#pragma once
// A gateway wired as roles/gateway.cpp wires it (Redis platform, REST API, outbound
// consumers, reply hub, web chat with its room fan-out), plus an echo worker on the bus, all on one io_context run by a
// background thread, against a real redis-server. Tests talk to it over real HTTP.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/inbound_consumer.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/platform/dispatcher.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/platform/redis/redis_platform_api.hpp"
#include "stargazer/platform/webchat/webchat_platform.hpp"
#include "stargazer/redis/subscriber.hpp"

#include "redis_server.hpp"

#include <boost/asio.hpp>

#include <functional>
#include <memory>
#include <thread>

namespace stargazer::test {

struct gateway_fixture {
  static constexpr const char* admin_key = "test-admin-key";

  // `worker_delay`: how long the echo worker thinks before replying; `with_worker=false`
  // leaves inbound messages unanswered (for timeouts).
  explicit gateway_fixture(bool with_worker = true, std::chrono::milliseconds worker_delay = std::chrono::milliseconds(0),
                           platform::webchat_settings webchat_settings = {});
  ~gateway_fixture();

  std::uint16_t port() const { return server->port(); }
  // Runs `fn` on the io thread and waits for it.
  void on_io(std::function<void()> fn);

  redis_server redis;
  boost::asio::io_context io;
  metrics::registry metrics;
  redis::connection_settings settings;
  std::unique_ptr<redis::connection> conn;
  std::unique_ptr<redis::subscriber> sub;
  std::unique_ptr<bus::event_bus> bus;
  std::unique_ptr<platform::redis_platform> platform;
  std::unique_ptr<platform::reply_hub> hub;
  std::unique_ptr<platform::outbound_dispatcher> dispatch;
  std::unique_ptr<bus::outbound_consumer> outbound;
  std::unique_ptr<bus::inbound_consumer> worker;
  std::unique_ptr<redis::subscriber> rooms;
  std::unique_ptr<platform::webchat_platform> webchat;
  std::unique_ptr<platform::outbound_dispatcher> webchat_dispatch;
  std::unique_ptr<bus::outbound_consumer> webchat_outbound;
  http::router routes;
  std::unique_ptr<http::http_server> server;
  std::thread thread;
};

}  // namespace stargazer::test

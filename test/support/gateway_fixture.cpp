#include "gateway_fixture.hpp"

#include <future>

namespace stargazer::test {

namespace asio = boost::asio;

gateway_fixture::gateway_fixture(bool with_worker, std::chrono::milliseconds worker_delay,
                                 platform::webchat_settings webchat_settings)
    : settings(redis::settings_from_url(redis.url())) {
  conn = std::make_unique<redis::connection>(io.get_executor(), settings, &metrics);
  sub = std::make_unique<redis::subscriber>(io.get_executor(), settings);
  bus = std::make_unique<bus::event_bus>(*conn, bus::event_bus_settings{}, &metrics);
  platform = std::make_unique<platform::redis_platform>(*conn, *bus);
  hub = std::make_unique<platform::reply_hub>(*sub);
  dispatch = std::make_unique<platform::outbound_dispatcher>(*platform);
  outbound = std::make_unique<bus::outbound_consumer>(*conn, settings, bus->names(), "gw", *dispatch);
  rooms = std::make_unique<redis::subscriber>(io.get_executor(), settings);
  // As roles/gateway.cpp: the web chat's invite routes take the admin key.
  if (webchat_settings.admin_key_sha256.empty()) webchat_settings.admin_key_sha256 = platform::sha256_hex(admin_key);
  webchat = std::make_unique<platform::webchat_platform>(*conn, *bus, *rooms, std::move(webchat_settings));
  webchat_dispatch = std::make_unique<platform::outbound_dispatcher>(*webchat);
  webchat_outbound = std::make_unique<bus::outbound_consumer>(*conn, settings, bus->names(), "gw", *webchat_dispatch);
  if (with_worker) {
    auto* b = bus.get();
    worker = std::make_unique<bus::inbound_consumer>(
        *conn, settings, *bus, "worker",
        [b, worker_delay](const bus::turn& t) -> asio::awaitable<bus::outcome> {
          if (worker_delay.count() > 0) {
            asio::steady_timer timer(co_await asio::this_coro::executor, worker_delay);
            co_await timer.async_wait(asio::use_awaitable);
          }
          bus::outbound_envelope reply;
          reply.channel_id = t.message.channel_id;
          reply.text = "echo: " + t.message.content;
          reply.message_key = t.message_key(0);
          reply.response_nonce = t.message.response_nonce;
          reply.trace_id = t.message.trace_id;
          // The turn's last send completes it, as the message processor's does: the gateway
          // then signals turn_complete with the delivery, no separate entry.
          const auto files = t.message.attachments.size();
          reply.completes_turn = files == 0;
          const auto replied = co_await b->publish_outbound(t.message.platform, reply);
          if (replied && reply.completes_turn) t.completion_published = true;
          for (std::size_t i = 0; i < t.message.attachments.size(); ++i) {
            bus::outbound_envelope file;
            file.type = bus::outbound_type::file;
            file.channel_id = t.message.channel_id;
            file.file_data = t.message.attachments[i].data;
            file.filename = t.message.attachments[i].filename;
            file.mimetype = t.message.attachments[i].mimetype;
            file.message_key = t.message_key(i + 1);
            file.response_nonce = t.message.response_nonce;
            file.completes_turn = i + 1 == files;
            const auto sent = co_await b->publish_outbound(t.message.platform, file);
            if (sent && file.completes_turn) t.completion_published = true;
          }
          co_return bus::outcome::ack();
        });
  }
  platform::redis_platform_api_settings api;
  api.admin_key_sha256 = platform::sha256_hex(admin_key);
  api.sse_heartbeat = std::chrono::seconds(1);
  platform::add_redis_platform_routes(routes, *platform, *hub, api);
  http::server_settings hs;
  hs.port = 0;
  hs.max_connections_per_ip = 0;  // tests and the REST benchmark load it from 127.0.0.1 alone
  server = std::make_unique<http::http_server>(io, hs, routes, metrics);
  webchat->add_routes(routes, *server);
  server->listen();

  conn->start();
  sub->start();
  rooms->start();
  std::promise<void> ready;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis", "webchat"};
    co_await bus->ensure_streams(role::standalone, platforms);
    co_await hub->start();
    co_await outbound->start();
    co_await webchat_outbound->start();
    co_await webchat->start();
    // Tests publish at once: wait until the room pattern is subscribed.
    for (int i = 0; i < 500 && rooms->confirmed() == 0; ++i) {
      asio::steady_timer t(io, std::chrono::milliseconds(10));
      co_await t.async_wait(asio::use_awaitable);
    }
    if (worker) co_await worker->start();
    ready.set_value();
  }, asio::detached);
  thread = std::thread([this] {
    auto guard = asio::make_work_guard(io);
    io.run();
  });
  ready.get_future().wait();
}

void gateway_fixture::on_io(std::function<void()> fn) {
  std::promise<void> done;
  asio::post(io, [&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

gateway_fixture::~gateway_fixture() {
  std::promise<void> stopped;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    co_await server->stop(std::chrono::milliseconds(500));
    if (worker) co_await worker->stop(std::chrono::milliseconds(500));
    co_await outbound->stop(std::chrono::milliseconds(500));
    co_await webchat_outbound->stop(std::chrono::milliseconds(500));
    co_await webchat->stop();
    rooms->stop();
    sub->stop();
    conn->stop();
    stopped.set_value();
  }, asio::detached);
  stopped.get_future().wait();
  io.stop();
  thread.join();
}

}  // namespace stargazer::test

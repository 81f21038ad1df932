#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/expiry_memo.hpp"

#include "stargazer/core/spawn.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "request_queue.hpp"
#include "transport.hpp"
#include "../core/detail/net.hpp"

#include <openssl/sha.h>

#include <array>
#include <random>
#include <stdexcept>

namespace stargazer::redis {

namespace asio = boost::asio;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;

namespace {

const log::logger& redis_log() {
  static const log::logger instance("redis");
  return instance;
}

}  // namespace

connection_settings settings_from_url(std::string_view url) {
  std::string error;
  auto a = parse_url(url, &error);
  if (!a) throw std::invalid_argument(error);
  connection_settings s;
  s.server = std::move(*a);
  return s;
}

script::script(std::string source) : source_(std::move(source)) {
  std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
  ::SHA1(reinterpret_cast<const unsigned char*>(source_.data()), source_.size(), digest.data());
  static constexpr char hex[] = "0123456789abcdef";
  sha1_.reserve(2 * digest.size());
  for (auto b : digest) {
    sha1_.push_back(hex[b >> 4]);
    sha1_.push_back(hex[b & 0xf]);
  }
}

request& request::push_range(const std::vector<std::string>& args) {
  encoder_.begin(args.size());
  for (const auto& a : args) encoder_.arg(std::string_view(a));
  ++commands_;
  return *this;
}

request& request::push_with(std::initializer_list<std::string_view> head, const std::vector<std::string>& tail) {
  encoder_.begin(head.size() + tail.size());
  for (auto a : head) encoder_.arg(a);
  for (const auto& a : tail) encoder_.arg(std::string_view(a));
  ++commands_;
  return *this;
}

// ---------------------------------------------------------------------------------------

struct connection::impl : std::enable_shared_from_this<impl> {
  // The waiting side of one request; its place in the queue (waiting, in flight,
  // answered) is detail::request_queue's business, which reports the outcome here.
  struct pending {
    explicit pending(asio::any_io_executor ex) : done_signal(ex, clock_type::time_point::max()) {}
    bool completed = false;
    std::error_code outcome;
    std::vector<reply> replies;
    asio::steady_timer done_signal;  // cancelled on completion: the waiting coroutine's condition variable
  };
  using pending_ptr = std::shared_ptr<pending>;

  impl(asio::any_io_executor ex, connection_settings s, metrics::registry* m)
      : executor(ex),
        settings(std::move(s)),
        link(ex),
        writer_signal(ex, clock_type::time_point::max()),
        loops_done(ex, clock_type::time_point::max()),
        parser(std::make_unique<resp_parser>(settings.max_reply_bytes)),
        rng(std::random_device{}()) {
    if (settings.server.kind == transport::tls)
      tls_context = net::make_tls_client_context(settings.tls_ca_file, settings.tls_verify);
    if (m != nullptr) register_metrics(*m);
  }

  asio::any_io_executor executor;
  connection_settings settings;
  detail::transport link;
  std::unique_ptr<asio::ssl::context> tls_context;
  asio::steady_timer writer_signal;  // wakes the writer when work is queued
  asio::steady_timer loops_done;     // wakes run() when reader, writer and health loops ended
  std::unique_ptr<resp_parser> parser;
  std::array<char, 64 * 1024> read_buffer{};
  detail::request_queue queue;  // also knows whether the link is up and the handshake done
  push_handler on_push;
  std::function<request()> on_connect;
  std::mt19937 rng;
  expiry_memo expiries;

  bool started = false;
  bool stopped = false;
  bool socket_up = false;  // transport connected, loops running
  bool writer_idle = false;
  int loops_running = 0;
  std::uint64_t generation = 0;  // incremented per connect; loops of older ones exit
  std::uint64_t connects = 0;
  std::string last_error;
  address current;

  // Metrics (null when no registry was given).
  metrics::gauge* connected_gauge = nullptr;
  metrics::counter* reconnect_counter = nullptr;
  metrics::histogram* latency = nullptr;
  metrics::callback_handle in_flight_metric;

  void register_metrics(metrics::registry& m) {
    const metrics::label_set labels{{"connection", settings.metrics_name}};
    connected_gauge = &m.make_gauge("stargazer_redis_connected", "1 when the Redis connection is up and ready", labels);
    reconnect_counter =
        &m.make_counter("stargazer_redis_reconnects_total", "Successful Redis reconnects after the first connect", labels);
    latency = &m.make_histogram("stargazer_redis_command_duration_seconds",
                                "Time from exec() to the last reply of a request", metrics::latency_buckets(), labels);
    in_flight_metric = m.make_gauge_callback("stargazer_redis_in_flight", "Requests queued or awaiting replies", labels,
                                             [this] { return static_cast<double>(queue.waiting() + queue.in_flight()); });
  }

  void wake_writer() {
    if (writer_idle) {
      writer_idle = false;
      writer_signal.cancel();
    }
  }

  // ---- queueing ----------------------------------------------------------------------

  // `ahead`: before everything waiting (connect-time commands).
  pending_ptr enqueue(request&& req, bool ahead = false) {
    detail::request_queue::item item;
    item.expected = req.expects_replies() ? req.commands() : 0;
    item.payload = req.take_payload();
    const auto enqueued = clock_type::now();
    item.deadline = enqueued + req.opts().timeout.value_or(settings.command_timeout);
    item.retry_if_sent = req.opts().retry_if_sent;
    item.fail_if_disconnected = req.opts().fail_if_disconnected;
    item.ahead = ahead;
    return submit(std::move(item), enqueued);
  }

  // Queues `item` (completed at once when stopped, empty or not connected) and returns
  // what its caller waits on.
  pending_ptr submit(detail::request_queue::item item, clock_type::time_point enqueued) {
    auto p = std::make_shared<pending>(executor);
    // Runs inside queue calls made by this object, never after it is gone.
    item.on_complete = [this, p, enqueued, setup = item.setup](std::error_code ec, std::vector<reply> replies) {
      p->completed = true;
      p->outcome = ec;
      p->replies = std::move(replies);
      if (latency != nullptr && !ec && !setup)
        latency->observe(std::chrono::duration<double>(clock_type::now() - enqueued).count());
      p->done_signal.cancel();
    };
    if (queue.enqueue(std::move(item))) wake_writer();
    return p;
  }

  asio::awaitable<result<std::vector<reply>>> wait_for(pending_ptr e) {
    if (!e->completed) {
      error_code ignored;
      co_await e->done_signal.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
    if (e->outcome) co_return e->outcome;
    co_return std::move(e->replies);
  }

  // ---- run loop ----------------------------------------------------------------------

  std::chrono::milliseconds backoff(int attempt) {
    const auto base = std::min<long long>(settings.reconnect_max.count(),
                                          settings.reconnect_min.count() << std::min(attempt, 20));
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    return std::chrono::milliseconds(static_cast<long long>(static_cast<double>(base) * jitter(rng)));
  }

  // Sleeps unless stop() comes first.
  asio::awaitable<void> sleep(std::chrono::milliseconds d) {
    auto t = std::make_shared<asio::steady_timer>(executor, d);
    sleepers.push_back(t);
    error_code ec;
    co_await t->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(sleepers, t);
  }
  std::vector<std::shared_ptr<asio::steady_timer>> sleepers;

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    int attempt = 0;
    while (!stopped) {
      std::optional<address> target;
      if (!settings.sentinel.addresses.empty()) {
        target = co_await discover_master();
      } else {
        target = settings.server;
      }
      if (stopped) break;
      if (target) {
        const auto ec = co_await link.connect(*target, tls_context.get(), settings.tls_verify, settings.connect_timeout);
        if (stopped) break;
        if (!ec) {
          current = *target;
          co_await serve_connection();
          if (ready_once_in_this_connection) attempt = 0;
          if (stopped) break;
        } else {
          last_error = "connect to " + describe(*target) + ": " + ec.message();
          redis_log().debug("{}", last_error);
        }
      }
      co_await sleep(backoff(attempt++));
    }
    socket_up = false;  // the queue went down with the last link (or was never up)
  }

  bool ready_once_in_this_connection = false;
  std::shared_ptr<asio::steady_timer> health_timer;

  // Runs reader, writer and health loops on a fresh connection until one fails.
  asio::awaitable<void> serve_connection() {
    ++generation;
    socket_up = true;
    queue.connected();  // not ready: only the handshake is written
    ready_once_in_this_connection = false;
    parser = std::make_unique<resp_parser>(settings.max_reply_bytes);
    queue_handshake();
    loops_running = 3;
    loops_done.expires_at(clock_type::time_point::max());
    auto self = shared_from_this();
    const auto gen = generation;
    const auto on_end = [self, exit = spawn_exit{"redis"}](std::exception_ptr e) {
      if (e) {
        exit(e);
        self->fail_connection(errc::protocol_error, "internal error");
      }
      if (--self->loops_running == 0) self->loops_done.cancel();
    };
    asio::co_spawn(executor, reader_loop(gen), on_end);
    asio::co_spawn(executor, writer_loop(gen), on_end);
    asio::co_spawn(executor, health_loop(gen), on_end);
    error_code ec;
    co_await loops_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    socket_up = false;  // fail_connection() took the queue down
    if (connected_gauge != nullptr) connected_gauge->set(0);
  }

  // AUTH, SELECT, CLIENT SETNAME and (with Sentinel) ROLE, written before anything else.
  void queue_handshake() {
    request setup;
    const auto& a = current;
    if (!a.password.empty()) {
      if (a.username.empty()) setup.push("AUTH", a.password);
      else setup.push("AUTH", a.username, a.password);
    }
    if (a.database != 0) setup.push("SELECT", a.database);
    if (!settings.client_name.empty()) setup.push("CLIENT", "SETNAME", settings.client_name);
    const bool check_role = !settings.sentinel.addresses.empty();
    if (check_role) setup.push("ROLE");
    if (setup.commands() == 0) setup.push("PING");

    detail::request_queue::item item;
    item.setup = true;
    item.expected = setup.commands();
    item.payload = setup.take_payload();
    const auto enqueued = clock_type::now();
    item.deadline = enqueued + settings.connect_timeout + settings.command_timeout;
    auto e = submit(std::move(item), enqueued);  // first in the queue, wakes the writer

    auto self = shared_from_this();
    const auto gen = generation;
    spawn(executor, [self, e, gen, check_role]() -> asio::awaitable<void> {
      auto replies = co_await self->wait_for(e);
      if (gen != self->generation || self->stopped) co_return;
      if (!replies) co_return;  // the connection failed; run() reconnects
      for (const auto& r : *replies) {
        if (r.is_error()) {
          self->fail_connection(errc::redis_error, "handshake failed: " + r.str());
          co_return;
        }
      }
      if (check_role) {
        const auto& role = replies->back();
        if (!role.is_array() || role.elements().empty() || role.elements()[0].str() != "master") {
          self->fail_connection(errc::no_master, describe(self->current) + " is not a master (ROLE)");
          co_return;
        }
      }
      self->on_handshake_done();
    }, "redis");
  }

  void on_handshake_done() {
    queue.handshake_done();
    ready_once_in_this_connection = true;
    if (connects++ > 0 && reconnect_counter != nullptr) reconnect_counter->inc();
    if (connected_gauge != nullptr) connected_gauge->set(1);
    last_error.clear();
    expiries.clear();
    redis_log().info("connected to {} ({})", describe(current), settings.metrics_name);
    if (on_connect) {
      auto extra = on_connect();
      // Ahead of user requests queued meanwhile.
      if (extra.commands() > 0) enqueue(std::move(extra), /*ahead=*/true);
    }
    wake_writer();
  }

  // ---- loops -------------------------------------------------------------------------

  asio::awaitable<void> writer_loop(std::uint64_t gen) {
    auto self = shared_from_this();
    std::vector<asio::const_buffer> buffers;
    detail::request_queue::write_batch batch;
    while (gen == generation && socket_up) {
      buffers.clear();
      // Every writable request (only the handshake until it is done), already in flight:
      // replies may arrive before the write completes.
      batch = queue.take_writable();
      if (batch.empty()) {
        writer_idle = true;
        writer_signal.expires_at(clock_type::time_point::max());
        error_code ec;
        co_await writer_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        writer_idle = false;
        continue;
      }
      for (std::size_t i = 0; i < batch.size(); ++i) buffers.emplace_back(asio::buffer(batch.payload(i)));
      std::error_code ec;
      co_await link.write(buffers, ec);
      if (gen != generation) break;
      if (ec) {
        fail_connection(ec, "write: " + ec.message());
        break;
      }
      queue.written(std::move(batch));
    }
  }

  asio::awaitable<void> reader_loop(std::uint64_t gen) {
    auto self = shared_from_this();
    while (gen == generation && socket_up) {
      std::error_code ec;
      const auto n = co_await link.read_some(asio::buffer(read_buffer), ec);
      if (gen != generation) break;
      if (ec) {
        fail_connection(ec, "read: " + ec.message());
        break;
      }
      parser->feed(read_buffer.data(), n);
      while (auto r = parser->next()) {
        on_reply(std::move(*r));
        if (gen != generation) co_return;
      }
      if (parser->error()) {
        fail_connection(parser->error(), "bad reply from server: " + parser->error_message());
        break;
      }
    }
  }

  void on_reply(reply&& r) {
    const bool readonly = r.is_error() && r.error_code() == "READONLY";
    switch (queue.on_reply(r)) {
      case detail::request_queue::reply_disposition::push:  // only in push mode: on_push is set
        on_push(std::move(r));
        return;
      case detail::request_queue::reply_disposition::unsolicited:
        fail_connection(errc::protocol_error, "unsolicited reply " + r.debug_string());
        return;
      case detail::request_queue::reply_disposition::matched:
      case detail::request_queue::reply_disposition::absorbed:
        break;
    }
    // A replica answered a write: the master moved (failover). Rediscover it.
    if (readonly && !settings.sentinel.addresses.empty()) fail_connection(errc::redis_error, "READONLY: master moved");
  }

  // Runs for the connection object's lifetime, connected or not, so that no caller waits
  // past its deadline.
  asio::awaitable<void> deadline_loop() {
    auto self = shared_from_this();
    auto timer = std::make_shared<asio::steady_timer>(executor);
    sleepers.push_back(timer);
    while (!stopped) {
      timer->expires_after(std::chrono::milliseconds(20));
      error_code ec;
      co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopped) break;
      expire_deadlines();
    }
    std::erase(sleepers, timer);
  }

  // Sends PING when the connection has been idle for health_check_interval; a PING
  // without an answer within the interval drops the connection.
  asio::awaitable<void> health_loop(std::uint64_t gen) {
    auto self = shared_from_this();
    if (settings.health_check_interval.count() <= 0) co_return;
    auto timer = std::make_shared<asio::steady_timer>(executor);
    health_timer = timer;
    while (gen == generation && socket_up) {
      timer->expires_after(settings.health_check_interval);
      error_code ec;
      co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (gen != generation || !socket_up) break;
      if (queue.ready()) {
        if (queue.in_flight() == 0 && queue.waiting() == 0) {
          request ping(request::options{.timeout = settings.health_check_interval, .fail_if_disconnected = true});
          ping.push("PING");
          auto e = enqueue(std::move(ping));
          spawn(executor, [self, e, gen]() -> asio::awaitable<void> {
            auto r = co_await self->wait_for(e);
            if (!r && r.error() == make_error_code(errc::timeout) && gen == self->generation)
              self->fail_connection(errc::timeout, "health check PING timed out");
          }, "redis");
        }
      }
    }
  }

  // Completes overdue requests with errc::timeout. A written request keeps its place
  // (its replies will still come and are discarded); an overdue head of the in-flight
  // queue means the server or the link is stuck, so the connection is dropped.
  void expire_deadlines() {
    if (queue.expire(clock_type::now())) fail_connection(errc::timeout, "request timed out; dropping the connection");
  }

  // Tears the current connection down; run() reconnects. In-flight requests fail with
  // connection_lost unless they may be resent; unwritten requests wait for the next one.
  void fail_connection(std::error_code ec, std::string why) {
    if (!socket_up) return;
    socket_up = false;
    ++generation;
    last_error = std::move(why);
    if (!stopped) redis_log().warn("connection to {} lost: {}", describe(current), last_error);
    link.close();
    writer_signal.cancel();
    if (health_timer) health_timer->cancel();
    if (connected_gauge != nullptr) connected_gauge->set(0);
    // Not ready any more; fails the handshake with `ec` (a no-op after stop(), which
    // already took the queue down).
    queue.connection_lost(ec);
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    // Written requests fail with connection_lost (none is resent), the rest with
    // shutting_down; new ones are refused.
    queue.stop();
    if (socket_up) fail_connection(errc::shutting_down, "stopped");
    if (connected_gauge != nullptr) connected_gauge->set(0);
    link.close();
    writer_signal.cancel();
    loops_done.cancel();
    for (auto& t : sleepers) t->cancel();
    sentinel_watch_cancel();
    // Coroutines may keep this object alive after the connection (and the registry) are
    // gone: let go of the registry now.
    in_flight_metric = {};
    connected_gauge = nullptr;
    reconnect_counter = nullptr;
    latency = nullptr;
  }

  // ---- Sentinel ------------------------------------------------------------------------

  std::vector<address> sentinel_addresses() const {
    std::vector<address> out;
    for (const auto& s : settings.sentinel.addresses) {
      address a;
      const auto colon = s.rfind(':');
      a.host = s.substr(0, colon);
      a.port = static_cast<std::uint16_t>(std::stoi(s.substr(colon + 1)));
      a.username = settings.sentinel.username;
      a.password = settings.sentinel.password;
      out.push_back(std::move(a));
    }
    return out;
  }

  // Sends one request on a short-lived connection and reads its replies.
  asio::awaitable<result<std::vector<reply>>> query_once(const address& where, request req) {
    auto link_ptr = std::make_shared<detail::transport>(executor);
    auto& t = *link_ptr;
    auto ec = co_await t.connect(where, nullptr, false, settings.connect_timeout);
    if (ec) co_return ec;
    const auto expected = req.commands();
    const auto payload = req.take_payload();
    // One deadline for the exchange: close the socket when it passes.
    auto deadline = std::make_shared<asio::steady_timer>(executor, settings.command_timeout);
    deadline->async_wait([link_ptr](const boost::system::error_code& e) {
      if (!e) link_ptr->close();
    });
    const std::vector<asio::const_buffer> out{asio::buffer(payload)};
    co_await t.write(out, ec);
    std::vector<reply> replies;
    resp_parser p(1024 * 1024);
    std::vector<char> buf(4096);  // not std::array: GCC 12 miscompiles arrays in coroutine frames
    while (!ec && replies.size() < expected) {
      const auto n = co_await t.read_some(asio::buffer(buf), ec);
      if (ec) break;
      p.feed(buf.data(), n);
      while (auto r = p.next()) replies.push_back(std::move(*r));
      if (p.error()) ec = p.error();
    }
    deadline->cancel();
    t.close();
    if (ec) co_return ec;
    co_return replies;
  }

  asio::awaitable<std::optional<address>> discover_master() {
    for (const auto& sentinel : sentinel_addresses()) {
      request req;
      if (!sentinel.password.empty()) {
        if (sentinel.username.empty()) req.push("AUTH", sentinel.password);
        else req.push("AUTH", sentinel.username, sentinel.password);
      }
      req.push("SENTINEL", "get-master-addr-by-name", settings.sentinel.master_name);
      auto replies = co_await query_once(sentinel, std::move(req));
      if (stopped) co_return std::nullopt;
      if (!replies) {
        last_error = "sentinel " + describe(sentinel) + ": " + replies.error().message();
        continue;
      }
      const auto& r = replies->back();
      if (!r.is_array() || r.elements().size() != 2) {
        last_error = "sentinel " + describe(sentinel) + " knows no master '" + settings.sentinel.master_name + "'";
        continue;
      }
      address master = settings.server;  // keeps credentials, database, TLS choice
      master.host = r.elements()[0].str();
      const auto port = r.elements()[1].to_integer();
      if (!port || *port <= 0 || *port > 65535) continue;
      master.port = static_cast<std::uint16_t>(*port);
      if (master.kind == transport::unix_socket) master.kind = transport::tcp;
      ensure_sentinel_watch();
      co_return master;
    }
    co_return std::nullopt;
  }

  // Follows +switch-master on the sentinels' Pub/Sub: a failover reconnects at once
  // instead of waiting for the old master's connection to fail.
  std::shared_ptr<detail::transport> watch_link;
  bool watching = false;

  void sentinel_watch_cancel() {
    if (watch_link) watch_link->close();
  }

  void ensure_sentinel_watch() {
    if (watching || stopped) return;
    watching = true;
    spawn(executor, sentinel_watch(shared_from_this()), "redis:sentinel");
  }

  static asio::awaitable<void> sentinel_watch(std::shared_ptr<impl> self) {
    std::size_t next = 0;
    const auto sentinels = self->sentinel_addresses();
    while (!self->stopped) {
      const auto& where = sentinels[next++ % sentinels.size()];
      auto link = std::make_shared<detail::transport>(self->executor);
      self->watch_link = link;
      auto ec = co_await link->connect(where, nullptr, false, self->settings.connect_timeout);
      if (!ec && !self->stopped) {
        request sub;
        if (!where.password.empty()) sub.push("AUTH", where.password);
        sub.push("SUBSCRIBE", "+switch-master");
        const auto payload = sub.take_payload();
        const std::vector<asio::const_buffer> out{asio::buffer(payload)};
        co_await link->write(out, ec);
        resp_parser p(1024 * 1024);
        std::vector<char> buf(4096);  // not std::array: GCC 12 miscompiles arrays in coroutine frames
        while (!ec && !self->stopped) {
          const auto n = co_await link->read_some(asio::buffer(buf), ec);
          if (ec) break;
          p.feed(buf.data(), n);
          while (auto r = p.next()) {
            // ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
            if (r->is_array() && r->elements().size() == 3 && r->elements()[0].str() == "message") {
              const auto& payload_text = r->elements()[2].str();
              if (payload_text.rfind(self->settings.sentinel.master_name + " ", 0) == 0) {
                redis_log().info("sentinel reports failover: {}", payload_text);
                self->fail_connection(errc::no_master, "+switch-master " + payload_text);
              }
            }
          }
          if (p.error()) ec = p.error();
        }
      }
      link->close();
      if (self->stopped) break;
      co_await self->sleep(std::chrono::milliseconds(500));
    }
    self->watching = false;
  }
};

// ---------------------------------------------------------------------------------------

connection::connection(asio::any_io_executor ex, connection_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(settings), metrics)) {}

connection::~connection() { impl_->stop(); }

void connection::start() {
  if (impl_->started) return;
  impl_->started = true;
  spawn(impl_->executor, impl_->deadline_loop(), "redis");
  spawn(impl_->executor, impl_->run(), "redis");
}

void connection::stop() { impl_->stop(); }

asio::awaitable<result<std::vector<reply>>> connection::exec(request req) {
  auto self = impl_;
  auto e = self->enqueue(std::move(req));
  co_return co_await self->wait_for(e);
}

asio::awaitable<result<reply>> connection::exec_one(request req) {
  auto self = impl_;
  auto e = self->enqueue(std::move(req));
  auto replies = co_await self->wait_for(e);
  if (!replies) co_return replies.error();
  if (replies->empty()) co_return reply{};
  co_return std::move(replies->front());
}

asio::awaitable<result<reply>> connection::eval(const script& s, const std::vector<std::string>& keys,
                                                const std::vector<std::string>& args) {
  const auto numkeys = std::to_string(keys.size());
  std::vector<std::string> tail = keys;
  tail.insert(tail.end(), args.begin(), args.end());
  request evalsha;
  evalsha.push_with({"EVALSHA", s.sha1(), numkeys}, tail);
  auto r = co_await exec_one(std::move(evalsha));
  if (!r || !r->is_error() || r->error_code() != "NOSCRIPT") co_return r;
  request eval;
  eval.push_with({"EVAL", s.source(), numkeys}, tail);
  co_return co_await exec_one(std::move(eval));
}

asio::awaitable<bool> connection::wait_connected(std::chrono::milliseconds timeout) {
  auto self = impl_;
  const auto until = clock_type::now() + timeout;
  asio::steady_timer t(self->executor);
  while (!self->queue.ready() && !self->stopped && clock_type::now() < until) {
    t.expires_after(std::chrono::milliseconds(5));
    error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return self->queue.ready();
}

void connection::set_push_handler(push_handler h) {
  impl_->on_push = std::move(h);
  impl_->queue.set_push_mode(static_cast<bool>(impl_->on_push));
}
expiry_memo& connection::expiries() { return impl_->expiries; }

void connection::set_on_connect(std::function<request()> make_setup) { impl_->on_connect = std::move(make_setup); }

void connection::reconnect() { impl_->fail_connection(errc::connection_lost, "reconnect requested"); }

connection_stats connection::stats() const {
  connection_stats s;
  s.connected = impl_->queue.ready();
  s.reconnects = impl_->connects > 0 ? impl_->connects - 1 : 0;
  s.in_flight = impl_->queue.in_flight();
  s.waiting = impl_->queue.waiting();
  s.last_error = impl_->last_error;
  s.endpoint = describe(impl_->current);
  return s;
}

const connection_settings& connection::settings() const { return impl_->settings; }
asio::any_io_executor connection::get_executor() const { return impl_->executor; }

}  // namespace stargazer::redis

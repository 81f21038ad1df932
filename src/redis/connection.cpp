#include "stargazer/redis/connection.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "transport.hpp"
#include "../core/detail/net.hpp"

#include <openssl/sha.h>

#include <array>
#include <deque>
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

bool is_push_kind(const reply& r) {
  if (!r.is_array() || r.elements().empty() || !r.elements()[0].is_bulk()) return false;
  const auto& k = r.elements()[0].str();
  return k == "message" || k == "pmessage" || k == "subscribe" || k == "psubscribe" || k == "unsubscribe" ||
         k == "punsubscribe";
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
  // One request on its way: queued, written, answered.
  struct entry {
    explicit entry(asio::any_io_executor ex) : done_signal(ex, clock_type::time_point::max()) {}
    std::string payload;
    std::size_t expected = 0;  // replies to wait for; 0: complete once written
    std::vector<reply> replies;
    clock_type::time_point enqueued;
    clock_type::time_point deadline;
    bool retry_if_sent = false;
    bool fail_if_disconnected = false;
    bool setup = false;      // connection handshake, written before anything else
    bool abandoned = false;  // completed (timeout, failure) while written: absorb its replies
    bool completed = false;
    std::error_code outcome;
    asio::steady_timer done_signal;  // cancelled on completion: the waiting coroutine's condition variable
  };
  using entry_ptr = std::shared_ptr<entry>;

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
  std::deque<entry_ptr> waiting;
  std::deque<entry_ptr> in_flight;
  push_handler on_push;
  std::function<request()> on_connect;
  std::mt19937 rng;

  bool started = false;
  bool stopped = false;
  bool socket_up = false;  // transport connected, loops running
  bool ready = false;      // handshake done: user requests may be written
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
                                             [this] { return static_cast<double>(waiting.size() + in_flight.size()); });
  }

  // ---- completion ------------------------------------------------------------------

  void complete(const entry_ptr& e, std::error_code ec) {
    if (e->completed) return;
    e->completed = true;
    e->outcome = ec;
    if (latency != nullptr && !ec && !e->setup)
      latency->observe(std::chrono::duration<double>(clock_type::now() - e->enqueued).count());
    e->done_signal.cancel();
  }

  void wake_writer() {
    if (writer_idle) {
      writer_idle = false;
      writer_signal.cancel();
    }
  }

  // ---- queueing ----------------------------------------------------------------------

  entry_ptr enqueue(request&& req) {
    auto e = std::make_shared<entry>(executor);
    e->expected = req.expects_replies() ? req.commands() : 0;
    e->payload = req.take_payload();
    e->enqueued = clock_type::now();
    e->deadline = e->enqueued + req.opts().timeout.value_or(settings.command_timeout);
    e->retry_if_sent = req.opts().retry_if_sent;
    e->fail_if_disconnected = req.opts().fail_if_disconnected;
    if (stopped) {
      complete(e, errc::shutting_down);
    } else if (req.commands() == 0) {
      complete(e, {});
    } else if (!ready && e->fail_if_disconnected) {
      complete(e, errc::not_connected);
    } else {
      waiting.push_back(e);
      wake_writer();
    }
    return e;
  }

  asio::awaitable<result<std::vector<reply>>> wait_for(entry_ptr e) {
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
    socket_up = false;
    ready = false;
  }

  bool ready_once_in_this_connection = false;
  std::shared_ptr<asio::steady_timer> health_timer;

  // Runs reader, writer and health loops on a fresh connection until one fails.
  asio::awaitable<void> serve_connection() {
    ++generation;
    socket_up = true;
    ready = false;
    ready_once_in_this_connection = false;
    parser = std::make_unique<resp_parser>(settings.max_reply_bytes);
    queue_handshake();
    loops_running = 3;
    loops_done.expires_at(clock_type::time_point::max());
    auto self = shared_from_this();
    const auto gen = generation;
    const auto on_end = [self](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          redis_log().error("connection loop failed: {}", ex.what());
        }
        self->fail_connection(errc::protocol_error, "internal error");
      }
      if (--self->loops_running == 0) self->loops_done.cancel();
    };
    asio::co_spawn(executor, reader_loop(gen), on_end);
    asio::co_spawn(executor, writer_loop(gen), on_end);
    asio::co_spawn(executor, health_loop(gen), on_end);
    error_code ec;
    co_await loops_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    socket_up = false;
    ready = false;
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

    auto e = std::make_shared<entry>(executor);
    e->setup = true;
    e->expected = setup.commands();
    e->payload = setup.take_payload();
    e->enqueued = clock_type::now();
    e->deadline = e->enqueued + settings.connect_timeout + settings.command_timeout;
    waiting.push_front(e);
    wake_writer();

    auto self = shared_from_this();
    const auto gen = generation;
    asio::co_spawn(executor, [self, e, gen, check_role]() -> asio::awaitable<void> {
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
    }, asio::detached);
  }

  void on_handshake_done() {
    ready = true;
    ready_once_in_this_connection = true;
    if (connects++ > 0 && reconnect_counter != nullptr) reconnect_counter->inc();
    if (connected_gauge != nullptr) connected_gauge->set(1);
    last_error.clear();
    redis_log().info("connected to {} ({})", describe(current), settings.metrics_name);
    if (on_connect) {
      auto extra = on_connect();
      if (extra.commands() > 0) {
        auto e = enqueue(std::move(extra));
        // Keep the connect-time commands ahead of user requests queued meanwhile.
        if (!e->completed) {
          waiting.pop_back();
          waiting.push_front(e);
        }
      }
    }
    wake_writer();
  }

  // ---- loops -------------------------------------------------------------------------

  asio::awaitable<void> writer_loop(std::uint64_t gen) {
    auto self = shared_from_this();
    std::vector<asio::const_buffer> buffers;
    std::vector<entry_ptr> batch;
    while (gen == generation && socket_up) {
      batch.clear();
      buffers.clear();
      // Take every writable request: only handshake entries until the handshake is done.
      for (auto it = waiting.begin(); it != waiting.end() && batch.size() < 4096;) {
        auto& e = *it;
        if (e->completed) {
          it = waiting.erase(it);
          continue;
        }
        if (!ready && !e->setup) {
          ++it;
          continue;
        }
        batch.push_back(e);
        it = waiting.erase(it);
      }
      if (batch.empty()) {
        writer_idle = true;
        writer_signal.expires_at(clock_type::time_point::max());
        error_code ec;
        co_await writer_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        writer_idle = false;
        continue;
      }
      // Replies may arrive before the write completes: register them as in flight first.
      for (auto& e : batch) {
        buffers.emplace_back(asio::buffer(e->payload));
        if (e->expected > 0) in_flight.push_back(e);
      }
      std::error_code ec;
      co_await link.write(buffers, ec);
      if (gen != generation) break;
      if (ec) {
        fail_connection(ec, "write: " + ec.message());
        break;
      }
      for (auto& e : batch) {
        if (e->expected == 0) complete(e, {});
        else if (!e->retry_if_sent) std::string().swap(e->payload);  // never resent: free it
      }
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
    if (on_push && is_push_kind(r)) {
      on_push(std::move(r));
      return;
    }
    if (in_flight.empty()) {
      fail_connection(errc::protocol_error, "unsolicited reply " + r.debug_string());
      return;
    }
    const bool readonly = r.is_error() && r.error_code() == "READONLY";
    auto e = in_flight.front();
    e->replies.push_back(std::move(r));
    if (e->replies.size() == e->expected) {
      in_flight.pop_front();
      if (!e->abandoned) complete(e, {});
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
      if (ready) {
        if (in_flight.empty() && waiting.empty()) {
          request ping(request::options{.timeout = settings.health_check_interval, .fail_if_disconnected = true});
          ping.push("PING");
          auto e = enqueue(std::move(ping));
          asio::co_spawn(executor, [self, e, gen]() -> asio::awaitable<void> {
            auto r = co_await self->wait_for(e);
            if (!r && r.error() == make_error_code(errc::timeout) && gen == self->generation)
              self->fail_connection(errc::timeout, "health check PING timed out");
          }, asio::detached);
        }
      }
    }
  }

  // Completes overdue requests with errc::timeout. A written request keeps its place
  // (its replies will still come and are discarded); an overdue head of the in-flight
  // queue means the server or the link is stuck, so the connection is dropped.
  void expire_deadlines() {
    const auto now = clock_type::now();
    for (auto it = waiting.begin(); it != waiting.end();) {
      if ((*it)->deadline <= now && !(*it)->setup) {
        complete(*it, errc::timeout);
        it = waiting.erase(it);
      } else {
        ++it;
      }
    }
    bool head_overdue = false;
    for (std::size_t i = 0; i < in_flight.size(); ++i) {
      auto& e = in_flight[i];
      if (e->deadline <= now && !e->abandoned) {
        e->abandoned = true;
        complete(e, errc::timeout);
        if (i == 0) head_overdue = true;
      }
    }
    if (head_overdue) fail_connection(errc::timeout, "request timed out; dropping the connection");
  }

  // Tears the current connection down; run() reconnects. In-flight requests fail with
  // connection_lost unless they may be resent; unwritten requests wait for the next one.
  void fail_connection(std::error_code ec, std::string why) {
    if (!socket_up) return;
    socket_up = false;
    ready = false;
    ++generation;
    last_error = std::move(why);
    if (!stopped) redis_log().warn("connection to {} lost: {}", describe(current), last_error);
    link.close();
    writer_signal.cancel();
    if (health_timer) health_timer->cancel();
    if (connected_gauge != nullptr) connected_gauge->set(0);

    std::deque<entry_ptr> resend;
    for (auto& e : in_flight) {
      if (e->abandoned || e->completed) continue;
      if (e->setup) {
        complete(e, ec);
      } else if (e->retry_if_sent && !stopped) {
        e->replies.clear();
        resend.push_back(e);
      } else {
        complete(e, errc::connection_lost);
      }
    }
    in_flight.clear();
    for (auto& e : waiting) {
      if (e->setup) complete(e, ec);
      else if (e->fail_if_disconnected) complete(e, errc::not_connected);
    }
    std::erase_if(waiting, [](const entry_ptr& e) { return e->completed; });
    waiting.insert(waiting.begin(), resend.begin(), resend.end());
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    if (socket_up) fail_connection(errc::shutting_down, "stopped");
    if (connected_gauge != nullptr) connected_gauge->set(0);
    link.close();
    for (auto& e : waiting) complete(e, errc::shutting_down);
    waiting.clear();
    for (auto& e : in_flight) complete(e, errc::shutting_down);
    in_flight.clear();
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
    asio::co_spawn(executor, sentinel_watch(shared_from_this()), asio::detached);
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
  asio::co_spawn(impl_->executor, impl_->deadline_loop(), asio::detached);
  asio::co_spawn(impl_->executor, impl_->run(), [](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        redis_log().error("run loop failed: {}", ex.what());
      }
    }
  });
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
  while (!self->ready && !self->stopped && clock_type::now() < until) {
    t.expires_after(std::chrono::milliseconds(5));
    error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return self->ready;
}

void connection::set_push_handler(push_handler h) { impl_->on_push = std::move(h); }
void connection::set_on_connect(std::function<request()> make_setup) { impl_->on_connect = std::move(make_setup); }

void connection::reconnect() { impl_->fail_connection(errc::connection_lost, "reconnect requested"); }

connection_stats connection::stats() const {
  connection_stats s;
  s.connected = impl_->ready;
  s.reconnects = impl_->connects > 0 ? impl_->connects - 1 : 0;
  s.in_flight = impl_->in_flight.size();
  s.waiting = impl_->waiting.size();
  s.last_error = impl_->last_error;
  s.endpoint = describe(impl_->current);
  return s;
}

const connection_settings& connection::settings() const { return impl_->settings; }
asio::any_io_executor connection::get_executor() const { return impl_->executor; }

}  // namespace stargazer::redis

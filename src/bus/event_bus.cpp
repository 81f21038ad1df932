#include "stargazer/bus/event_bus.hpp"

#include "stargazer/bus/topology.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/expiry_memo.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <stdexcept>

namespace stargazer::bus {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

const log::logger& bus_log() {
  static const log::logger instance("bus");
  return instance;
}

// Assigns the next sequence number of an ordering key and appends the entry, atomically,
// so sequence order equals stream order. A new order set gets `done` 0 (marks only update
// it, so a set deleted meanwhile is not re-created without a TTL) and its TTL, which is
// refreshed when `refresh` is '1', the connection's refresh being due (redis/expiry_memo.hpp).
// KEYS[1..2]: the stream, the order set; ARGV[1..4]: maxlen, data, trace id, okey.
// The score comes back as text ("%.17g": exact, without an exponent, below 2^53).
const std::string& append_in_order_lua() {
  static const std::string text = fmt::format(R"lua(
local function append_in_order(refresh)
  local n = redis.call('ZINCRBY', KEYS[2], 1, 'next')
  if n == '1' then redis.call('ZADD', KEYS[2], 0, 'done') end
  if n == '1' or refresh == '1' then redis.call('EXPIRE', KEYS[2], {}) end
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                    'data', ARGV[2], 'trace_id', ARGV[3], 'okey', ARGV[4], 'seq', n)
end
)lua", order_set_ttl.count());
  return text;
}

const redis::script& publish_ordered_script() {
  static const redis::script s(append_in_order_lua() + "return append_in_order(ARGV[5])\n");
  return s;
}

// The same, and then another entry's order mark: KEYS[3] its order set, ARGV[6] its sequence.
const redis::script& publish_ordered_marking_script() {
  static const redis::script s(std::string(mark_done_lua()) + append_in_order_lua() +
                               "local id = append_in_order(ARGV[5])\nmark_done(KEYS[3], ARGV[6])\nreturn id\n");
  return s;
}

// As publish_ordered_script (ARGV[7]: the refresh), unless the marker KEYS[3] exists;
// then the marker is set to ARGV[5] for ARGV[6] seconds with the append. Returns {entry id, ''} or {'', marker value}.
const redis::script& publish_once_script() {
  static const redis::script s(append_in_order_lua() + R"lua(
local first = redis.call('GET', KEYS[3])
if first then return {'', first} end
local id = append_in_order(ARGV[7])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
return {id, ''}
)lua");
  return s;
}

std::string refresh_flag(redis::connection& conn, const std::string& order_hash) {
  return conn.expiries().due(order_hash) ? "1" : "0";
}

}  // namespace

struct event_bus::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& c, event_bus_settings s, metrics::registry* m)
      : conn(c), settings(std::move(s)), metrics(m) {
    settings.stream_maxlen = std::max<std::uint64_t>(1000, settings.stream_maxlen);
    maxlen_text = std::to_string(settings.stream_maxlen);
  }

  redis::connection& conn;
  event_bus_settings settings;
  metrics::registry* metrics;
  std::string maxlen_text;
  std::map<std::string, clock_type::time_point, std::less<>> last_backlog_check;

  // Runs the backlog check at most once per interval per stream, off the publish path.
  void maybe_check_backlog(const std::string& stream, const std::string& group) {
    const auto now = clock_type::now();
    auto& last = last_backlog_check[stream];
    if (now - last < settings.backlog_check_interval) return;
    last = now;
    spawn(co_executor(), check_backlog(shared_from_this(), stream, group), "event-bus");
  }

  asio::any_io_executor co_executor();

  static asio::awaitable<void> check_backlog(std::shared_ptr<impl> self, std::string stream, std::string group);
  asio::awaitable<result<stream_stats>> stats(const std::string& stream, const std::string& group);
};

event_bus::event_bus(redis::connection& conn, event_bus_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(conn, std::move(settings), metrics)) {}

event_bus::~event_bus() = default;

const topology& event_bus::names() const { return impl_->settings.names; }
std::uint64_t event_bus::maxlen() const { return impl_->settings.stream_maxlen; }

asio::awaitable<void> event_bus::ensure_group(const std::string& stream, const std::string& group) {
  // From id 0, not $: entries published before the group existed are still delivered.
  auto r = co_await impl_->conn.command("XGROUP", "CREATE", stream, group, "0", "MKSTREAM");
  if (!r) throw std::runtime_error("XGROUP CREATE " + stream + " " + group + ": " + r.error().message());
  if (r->is_error() && r->error_code() != "BUSYGROUP")
    throw std::runtime_error("XGROUP CREATE " + stream + " " + group + ": " + r->str());
}

asio::awaitable<void> event_bus::ensure_streams(role r, const std::vector<std::string>& platforms) {
  const auto& n = impl_->settings.names;
  const bool worker = r == role::worker || r == role::standalone;
  const bool gateway = r == role::gateway || r == role::standalone;
  // Each side also creates the group it publishes to, so nothing published before the
  // consumer's first start is skipped (docs/protocol.md §1.2).
  if (worker || gateway) co_await ensure_group(n.inbound_stream, n.worker_group);
  if (worker || gateway)
    for (const auto& p : platforms) co_await ensure_group(n.outbound_stream(p), n.gateway_group(p));
  if (r == role::tools || r == role::standalone) co_await ensure_group(n.tools_stream, n.tools_group);
}

asio::awaitable<result<std::string>> event_bus::publish(const std::string& stream, const std::string& data,
                                                        const std::string& trace_id, const std::string& okey,
                                                        order_mark* also_mark) {
  auto self = impl_;
  result<redis::reply> r = make_error_code(errc::invalid_argument);
  const bool marks = mark_wanted(also_mark) && !okey.empty();
  if (okey.empty()) {
    r = co_await self->conn.command("XADD", stream, "MAXLEN", "~", self->maxlen_text, "*", "data", data, "trace_id",
                                    trace_id);
  } else {
    std::vector<std::string> keys{stream, order_key(stream, okey)};
    std::vector<std::string> args{self->maxlen_text, data, trace_id, okey, refresh_flag(self->conn, keys[1])};
    if (marks) {
      keys.push_back(also_mark->key);
      args.push_back(std::to_string(also_mark->seq));
    }
    r = co_await self->conn.eval(marks ? publish_ordered_marking_script() : publish_ordered_script(), keys, args);
  }
  if (!r) co_return r.error();
  if (!r->is_bulk()) {
    bus_log().error("publish to {} failed: {}", stream, r->debug_string());
    co_return make_error_code(errc::redis_error);
  }
  if (marks) also_mark->written = true;
  co_return std::move(r->str());
}

asio::awaitable<result<std::string>> event_bus::publish_inbound(const inbound_envelope& e) {
  const auto& n = impl_->settings.names;
  impl_->maybe_check_backlog(n.inbound_stream, n.worker_group);
  co_return co_await publish(n.inbound_stream, encode(e), e.trace_id, e.platform + ":" + e.channel_id);
}

asio::awaitable<result<event_bus::once_result>> event_bus::publish_inbound_once(const inbound_envelope& e,
                                                                              const std::string& marker_key,
                                                                              std::chrono::seconds ttl) {
  auto self = impl_;
  const auto& n = self->settings.names;
  self->maybe_check_backlog(n.inbound_stream, n.worker_group);
  const auto okey = e.platform + ":" + e.channel_id;
  const std::vector<std::string> keys{n.inbound_stream, order_key(n.inbound_stream, okey), marker_key};
  const std::vector<std::string> args{self->maxlen_text, encode(e), e.trace_id,        okey,
                                      e.message_id,      std::to_string(ttl.count()), refresh_flag(self->conn, keys[1])};
  auto r = co_await self->conn.eval(publish_once_script(), keys, args);
  if (!r) co_return r.error();
  if (!r->is_array() || r->elements().size() != 2) {
    bus_log().error("publish to {} failed: {}", n.inbound_stream, r->debug_string());
    co_return make_error_code(errc::redis_error);
  }
  co_return once_result{r->elements()[0].str(), r->elements()[1].str()};
}

asio::awaitable<result<std::string>> event_bus::publish_outbound(const std::string& platform,
                                                                 const outbound_envelope& e, order_mark* also_mark) {
  const auto& n = impl_->settings.names;
  const auto stream = n.outbound_stream(platform);
  impl_->maybe_check_backlog(stream, n.gateway_group(platform));
  // RPC requests are not ordered with the channel's sends (they are answered before locking).
  std::string okey;
  if (e.type != outbound_type::rpc_request) okey = e.channel_id.empty() ? "global" : e.channel_id;
  co_return co_await publish(stream, encode(e), e.trace_id, okey, also_mark);
}

asio::awaitable<result<stream_stats>> event_bus::stats(const std::string& stream, const std::string& group) {
  co_return co_await impl_->stats(stream, group);
}

asio::any_io_executor event_bus::impl::co_executor() { return conn.get_executor(); }

asio::awaitable<result<stream_stats>> event_bus::impl::stats(const std::string& stream, const std::string& group) {
  redis::request req;
  req.push("XLEN", stream).push("XPENDING", stream, group).push("XINFO", "GROUPS", stream).push("XLEN", dead_letter_stream(stream));
  auto r = co_await conn.exec(std::move(req));
  if (!r) co_return r.error();
  auto& replies = *r;
  stream_stats s;
  s.length = replies[0].integer();
  if (replies[1].is_array() && !replies[1].elements().empty()) s.pending = replies[1].elements()[0].integer();
  if (replies[2].is_array()) {
    for (const auto& g : replies[2].elements()) {
      const auto& kv = g.elements();
      bool ours = false;
      std::int64_t lag = -1;
      for (std::size_t i = 0; i + 1 < kv.size(); i += 2) {
        if (kv[i].str() == "name") ours = kv[i + 1].str() == group;
        if (kv[i].str() == "lag") lag = kv[i + 1].is_integer() ? kv[i + 1].integer() : -1;
      }
      if (ours) s.lag = lag;
    }
  }
  s.dead_letters = replies[3].integer();
  co_return s;
}

asio::awaitable<void> event_bus::impl::check_backlog(std::shared_ptr<impl> self, std::string stream, std::string group) {
  auto s = co_await self->stats(stream, group);
  if (!s) co_return;  // a failed check only loses a warning; publishing goes on
  if (self->metrics != nullptr) {
    const metrics::label_set labels{{"stream", stream}, {"group", group}};
    self->metrics->make_gauge("stargazer_stream_length", "Entries in the stream (XLEN)", {{"stream", stream}})
        .set(static_cast<double>(s->length));
    self->metrics->make_gauge("stargazer_stream_pending", "Entries delivered and not acknowledged", labels)
        .set(static_cast<double>(s->pending));
    if (s->lag >= 0)
      self->metrics->make_gauge("stargazer_stream_lag", "Entries not yet delivered to the group", labels)
          .set(static_cast<double>(s->lag));
    self->metrics->make_gauge("stargazer_dlq_length", "Entries in the dead-letter stream", {{"stream", stream}})
        .set(static_cast<double>(s->dead_letters));
  }
  const auto maxlen = static_cast<std::int64_t>(self->settings.stream_maxlen);
  if (s->length > maxlen * 8 / 10 || s->pending > 1000)
    bus_log().warn("stream backlog high, eviction risk: {} length={} pending={} maxlen={}", stream, s->length,
                   s->pending, maxlen);
}

}  // namespace stargazer::bus

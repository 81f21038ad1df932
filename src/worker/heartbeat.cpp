#include "stargazer/worker/heartbeat.hpp"

#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/worker/channel_state.hpp"
#include "stargazer/worker/message_processor.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace stargazer::worker {

namespace asio = boost::asio;
using namespace std::chrono_literals;

std::chrono::milliseconds heartbeat_tick(const heartbeat_settings& s) {
  const auto shortest = s.interval.count() > 0 ? std::min(s.initial_delay, s.interval) : s.initial_delay;
  const auto tick = std::clamp<std::chrono::seconds>(shortest, 1s, 60s);
  return std::chrono::duration_cast<std::chrono::milliseconds>(tick);
}

leader_lease_settings heartbeat_lease_settings(const heartbeat_settings& s) {
  auto lease = leader_lease_settings::for_interval(heartbeat_tick(s));
  lease.key = "sg:leader:heartbeat";
  return lease;
}

std::chrono::seconds heartbeat_visit_ttl(const heartbeat_settings& s) {
  return std::max<std::chrono::seconds>(1s, s.interval - s.interval / 10);
}

namespace {

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

enum class visit_result { sent, silent, failed, skipped };

}  // namespace

struct heartbeat::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& c, message_processor& p, std::shared_ptr<leader_lease> l, adapter_factory a,
       heartbeat_settings s, metrics::registry* reg)
      : conn(c),
        processor(p),
        lease(std::move(l)),
        adapters(std::move(a)),
        settings(s),
        channels(c),
        cache(c),
        timer(c.get_executor()),
        log("heartbeat") {
    if (reg != nullptr) {
      const auto visits = [&](const char* outcome) {
        return &reg->make_counter("stargazer_heartbeat_visits_total",
                                  "Channels the heartbeat looked at, by outcome (sent, silent, failed, skipped)",
                                  {{"outcome", outcome}});
      };
      sent = visits("sent");
      silent = visits("silent");
      failed = visits("failed");
      skipped = visits("skipped");
      leader_gauge =
          &reg->make_gauge("stargazer_heartbeat_leader", "1 while this process holds the heartbeat lease");
    }
  }

  // False when stopped while waiting.
  asio::awaitable<bool> wait(std::chrono::milliseconds d) {
    timer.expires_after(d);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_return !stopped;
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    const auto initial = std::chrono::duration_cast<std::chrono::milliseconds>(settings.initial_delay);
    if (!co_await wait(initial)) co_return;
    const auto tick = heartbeat_tick(settings);
    while (!stopped) {
      const bool leading = lease->is_leader();
      if (leader_gauge != nullptr) leader_gauge->set(leading ? 1 : 0);
      if (leading) co_await round_if_due();
      if (!co_await wait(tick)) co_return;
    }
  }

  // Starts a round when none ran within the interval, resumes an unfinished one.
  asio::awaitable<void> round_if_due() {
    const double started = now_unix();
    auto current = co_await channels.round();
    if (!current) {
      log.warn("heartbeat round unknown: {}", current.error().message());
      co_return;
    }
    if (current->exists && current->finished) co_return;
    if (!current->exists) {
      auto began = co_await channels.begin_round(settings.interval, started);
      if (!began || !*began) co_return;  // Redis failed, or another leader began it: the next tick looks again
      log.info("heartbeat round started");
    } else {
      log.info("resuming an unfinished heartbeat round");
    }
    auto list = co_await channels.heartbeat_channels(started, settings.forget_after, settings.max_channels);
    if (!list) {
      log.warn("heartbeat channels unknown: {}", list.error().message());
      co_return;
    }
    std::size_t messages = 0;
    for (const auto& channel : *list) {
      if (stopped || !lease->is_leader()) co_return;  // unfinished: the next leader resumes it
      const auto result = co_await visit(channel);
      bump(result == visit_result::sent ? sent : result == visit_result::silent ? silent
                                               : result == visit_result::failed ? failed
                                                                                : skipped);
      if (result == visit_result::sent) ++messages;
    }
    const double finished = now_unix();
    if (auto ec = co_await channels.finish_round(finished))
      log.warn("heartbeat round not marked finished: {}", ec.message());
    log.info("heartbeat round finished: {} channels, {} messages", list->size(), messages);
  }

  asio::awaitable<visit_result> visit(const channel_ref& ch) {
    if (platform_is_local(ch.platform)) co_return visit_result::skipped;
    auto seen = co_await channels.visited(ch.platform, ch.channel_id);
    if (!seen || *seen) co_return visit_result::skipped;
    auto gate = co_await channels.gate(ch.platform, ch.channel_id);
    if (!gate) co_return visit_result::failed;
    const auto policy = gate->mode.value_or(processor.settings().replies.for_platform(ch.platform));
    if (policy == reply_policy::addressed || gate->quiet) co_return visit_result::skipped;
    auto last = co_await cache.recent(ch.platform, ch.channel_id, 1);
    if (!last) co_return visit_result::failed;
    const double now = now_unix();
    if (!last->empty() && now - last->front().timestamp < static_cast<double>(settings.quiet.count()))
      co_return visit_result::skipped;
    auto adapter = adapters(ch.platform);
    if (co_await adapter->should_skip_channel_heartbeat(ch.channel_id)) co_return visit_result::skipped;
    // The visit is claimed before the turn: a crash during it never visits the channel twice.
    const auto visit_ttl = heartbeat_visit_ttl(settings);
    auto claimed = co_await channels.claim_heartbeat_visit(ch.platform, ch.channel_id, visit_ttl, now);
    if (!claimed || !*claimed) co_return visit_result::skipped;
    const auto key = platform::message_cache::message_key(ch.platform, ch.channel_id,
                                                          fmt::format("heartbeat-{:.0f}:0", now));
    log.info("heartbeat visit to {}:{}", ch.platform, ch.channel_id);
    const auto outcome = co_await processor.heartbeat(ch, *adapter, key);
    switch (outcome) {
      case heartbeat_outcome::sent: co_return visit_result::sent;
      case heartbeat_outcome::silent: co_return visit_result::silent;
      case heartbeat_outcome::model_failed:
      case heartbeat_outcome::send_failed: co_return visit_result::failed;
    }
    co_return visit_result::failed;
  }

  static void bump(metrics::counter* c) {
    if (c != nullptr) c->inc();
  }

  redis::connection& conn;
  message_processor& processor;
  std::shared_ptr<leader_lease> lease;
  adapter_factory adapters;
  heartbeat_settings settings;
  channel_state channels;
  platform::message_cache cache;
  asio::steady_timer timer;
  log::logger log;
  metrics::counter* sent = nullptr;
  metrics::counter* silent = nullptr;
  metrics::counter* failed = nullptr;
  metrics::counter* skipped = nullptr;
  metrics::gauge* leader_gauge = nullptr;
  bool stopped = false;
};

heartbeat::heartbeat(redis::connection& conn, message_processor& processor, std::shared_ptr<leader_lease> lease,
                     adapter_factory adapters, heartbeat_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(conn, processor, std::move(lease), std::move(adapters), settings, metrics)) {}

heartbeat::~heartbeat() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

asio::awaitable<void> heartbeat::start() {
  if (impl_->settings.interval.count() <= 0) co_return;  // off
  spawn(impl_->conn.get_executor(), impl_->run(), impl_->log.component());
  co_return;
}

asio::awaitable<void> heartbeat::stop(std::chrono::milliseconds) {
  impl_->stopped = true;
  impl_->timer.cancel();
  co_return;
}

}  // namespace stargazer::worker

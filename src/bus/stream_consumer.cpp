#include "stargazer/bus/stream_consumer.hpp"

#include "stargazer/bus/topology.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"

#include <boost/asio.hpp>

#include <set>

namespace stargazer::bus {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

struct stream_consumer::impl : std::enable_shared_from_this<impl>, parking_lot {
  impl(redis::connection& c, redis::connection_settings b, consumer_settings s, entry_handler h, metrics::registry* m)
      : commands(c),
        executor(c.get_executor()),
        settings(std::move(s)),
        handler(std::move(h)),
        log("consumer:" + settings.stream),
        slot_free(executor, clock_type::time_point::max()),
        sweep_timer(executor) {
    b.health_check_interval = std::chrono::milliseconds(0);  // a blocked connection answers nothing else
    b.command_timeout = settings.block + std::chrono::seconds(10);
    b.metrics_name = "blocking:" + settings.stream;
    blocking = std::make_unique<redis::connection>(executor, std::move(b), m);
    if (m != nullptr) {
      const metrics::label_set labels{{"stream", settings.stream}};
      acked = &m->make_counter("stargazer_consumer_entries_total", "Entries finished, by outcome",
                               {{"stream", settings.stream}, {"outcome", "ack"}});
      retried = &m->make_counter("stargazer_consumer_entries_total", "Entries finished, by outcome",
                                 {{"stream", settings.stream}, {"outcome", "retry"}});
      dead = &m->make_counter("stargazer_consumer_entries_total", "Entries finished, by outcome",
                              {{"stream", settings.stream}, {"outcome", "dead_letter"}});
      claimed = &m->make_counter("stargazer_consumer_reclaimed_total", "Entries taken over by XAUTOCLAIM", labels);
      duration = &m->make_histogram("stargazer_consumer_processing_seconds", "Handler time per entry",
                                    metrics::latency_buckets(), labels);
      in_flight_metric = m->make_gauge_callback("stargazer_consumer_in_flight", "Entries being processed", labels,
                                                [this] { return static_cast<double>(active.size()); });
    }
  }

  redis::connection& commands;
  asio::any_io_executor executor;
  consumer_settings settings;
  entry_handler handler;
  log::logger log;
  std::unique_ptr<redis::connection> blocking;
  asio::steady_timer slot_free;  // wakes the reader when an entry finishes
  asio::steady_timer sweep_timer;
  std::set<std::string> active;  // ids being processed here
  std::vector<std::string> ack_batch;
  std::vector<std::string> attempts_to_clear;
  bool ack_flush_scheduled = false;
  std::size_t parked = 0;

  void enter() override {
    ++parked;
    slot_free.cancel();  // a slot just became free for reading
  }
  void leave() override {
    if (parked > 0) --parked;
  }
  std::size_t busy() const {
    return active.size() - std::min(parked, settings.max_in_flight * settings.max_parked_factor);
  }
  bool running = false;
  bool reader_done = true;
  bool sweeper_done = true;
  std::uint64_t processed_count = 0;

  metrics::counter* acked = nullptr;
  metrics::counter* retried = nullptr;
  metrics::counter* dead = nullptr;
  metrics::counter* claimed = nullptr;
  metrics::histogram* duration = nullptr;
  metrics::callback_handle in_flight_metric;

  // ---- reading -------------------------------------------------------------------------

  asio::awaitable<void> read_loop() {
    auto self = shared_from_this();
    reader_done = false;
    bool just_created_group = false;  // a second NOGROUP in a row pauses like any error
    while (running) {
      const auto free = settings.max_in_flight > busy() ? settings.max_in_flight - busy() : 0;
      if (free == 0) {
        slot_free.expires_at(clock_type::time_point::max());
        boost::system::error_code ec;
        co_await slot_free.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      redis::request req;
      req.push("XREADGROUP", "GROUP", settings.group, settings.consumer, "COUNT", std::min(free, settings.read_count),
               "BLOCK", settings.block.count(), "STREAMS", settings.stream, ">");
      auto r = co_await blocking->exec_one(std::move(req));
      if (!running) break;
      if (r && r->is_error() && r->error_code() == "NOGROUP" && !std::exchange(just_created_group, true)) {
        // Not created yet (we started before the stream set-up) or vanished (the stream was
        // deleted): create it and read again at once. Pausing here would hold back every
        // entry published meanwhile for error_pause.
        auto created = co_await commands.command("XGROUP", "CREATE", settings.stream, settings.group, "0", "MKSTREAM");
        if (created && (!created->is_error() || created->error_code() == "BUSYGROUP")) {
          log.info("consumer group {} ready on {}", settings.group, settings.stream);
          continue;
        }
      }
      if (!r || r->is_error()) {
        just_created_group = false;
        log.warn("XREADGROUP failed: {}", r ? r->str() : r.error().message());
        co_await pause(settings.error_pause);
        continue;
      }
      just_created_group = false;
      for (auto& e : parse_xread(*r)) dispatch(std::move(e), delivery{0, false, this});
    }
    reader_done = true;
    slot_free.cancel();
  }

  asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer t(executor, d);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  void dispatch(stream_entry e, delivery d) {
    if (active.contains(e.id)) return;  // already being processed here (reclaimed from ourselves)
    active.insert(e.id);
    spawn(executor, process(shared_from_this(), std::move(e), d), log.component());
  }

  static asio::awaitable<void> process(std::shared_ptr<impl> self, stream_entry e, delivery d) {
    const auto started = clock_type::now();
    outcome result;
    auto pause = self->settings.retry_pause;
    for (std::size_t tries = 0;; ++tries) {
      d.local_retry = tries;
      try {
        result = co_await self->handler(e, d);
      } catch (const std::exception& ex) {
        result = outcome::retry(std::string("handler threw: ") + ex.what());
      }
      if (result.what != outcome::kind::retry || tries >= self->settings.local_retries || !self->running) break;
      self->log.debug("entry {} runs again in {} ms: {}", e.id, pause.count(), result.reason);
      co_await self->pause(pause);
      pause = std::min(pause * 2, self->settings.retry_pause_max);
    }
    if (self->duration != nullptr)
      self->duration->observe(std::chrono::duration<double>(clock_type::now() - started).count());
    switch (result.what) {
      case outcome::kind::ack:
        self->queue_ack(e.id, d.attempts > 0);
        if (self->acked != nullptr) self->acked->inc();
        break;
      case outcome::kind::retry:
        // Left pending: the autoclaim sweep retries it and counts the attempt.
        self->log.log(log::level::warn, {{"trace_id", std::string(e.field("trace_id"))}}, "entry {} not done: {}", e.id,
                      result.reason);
        if (self->retried != nullptr) self->retried->inc();
        break;
      case outcome::kind::dead_letter:
        co_await self->dead_letter(e, result.reason, d.attempts);
        break;
    }
    ++self->processed_count;
    self->active.erase(e.id);
    self->slot_free.cancel();
  }

  // ---- acknowledging ---------------------------------------------------------------------

  // Acks of one event-loop turn go out as one XACK (and one HDEL for reclaimed entries).
  void queue_ack(const std::string& id, bool had_attempts) {
    ack_batch.push_back(id);
    if (had_attempts) attempts_to_clear.push_back(id);
    if (!ack_flush_scheduled) {
      ack_flush_scheduled = true;
      spawn(executor, flush_acks(shared_from_this()), log.component());
    }
  }

  static asio::awaitable<void> flush_acks(std::shared_ptr<impl> self) {
    co_await asio::post(self->executor, asio::use_awaitable);  // let this turn's acks gather
    self->ack_flush_scheduled = false;
    auto ids = std::move(self->ack_batch);
    auto clear = std::move(self->attempts_to_clear);
    self->ack_batch.clear();
    self->attempts_to_clear.clear();
    if (ids.empty()) co_return;
    redis::request req(redis::request::options{.retry_if_sent = true});  // XACK and HDEL are idempotent
    req.push_with({"XACK", self->settings.stream, self->settings.group}, ids);
    if (!clear.empty()) req.push_with({"HDEL", attempts_key(self->settings.stream)}, clear);
    auto r = co_await self->commands.exec(std::move(req));
    if (!r) self->log.warn("XACK of {} entries failed ({}); they will be reclaimed", ids.size(), r.error().message());
  }

  // ---- dead letters ---------------------------------------------------------------------

  asio::awaitable<void> dead_letter(const stream_entry& e, const std::string& reason, std::uint64_t attempts) {
    std::vector<std::string> fields;
    for (const auto& [k, v] : e.fields) {
      fields.push_back(k);
      fields.push_back(v);
    }
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    for (auto [k, v] : std::initializer_list<std::pair<const char*, std::string>>{
             {"dlq_reason", reason},
             {"dlq_attempts", std::to_string(attempts)},
             {"dlq_consumer", settings.consumer},
             {"dlq_group", settings.group},
             {"dlq_stream", settings.stream},
             {"dlq_id", e.id},
             {"dlq_ts", std::to_string(now_ms)}}) {
      fields.emplace_back(k);
      fields.push_back(std::move(v));
    }
    redis::request req(redis::request::options{.retry_if_sent = false});
    req.push("MULTI");
    req.push_with({"XADD", dead_letter_stream(settings.stream), "MAXLEN", "~", std::to_string(settings.dlq_maxlen), "*"},
                  fields);
    req.push("XACK", settings.stream, settings.group, e.id);
    req.push("HDEL", attempts_key(settings.stream), e.id);
    req.push("EXEC");
    auto r = co_await commands.exec(std::move(req));
    if (!r || !r->back().is_array()) {
      log.error("dead-lettering {} failed; it stays pending", e.id);
      co_return;
    }
    log.log(log::level::warn, {{"trace_id", std::string(e.field("trace_id"))}}, "entry {} dead-lettered: {}", e.id,
            reason);
    if (dead != nullptr) dead->inc();
  }

  // ---- autoclaim ------------------------------------------------------------------------

  asio::awaitable<void> sweep_loop() {
    auto self = shared_from_this();
    sweeper_done = false;
    while (running) {
      sweep_timer.expires_after(settings.autoclaim_interval);
      boost::system::error_code ec;
      co_await sweep_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!running) break;
      co_await sweep();
    }
    sweeper_done = true;
  }

  // XAUTOCLAIM from 0-0, following the cursor (at most 10 pages per sweep); each claimed
  // entry's attempt count goes up, and past max_attempts it is dead-lettered instead.
  asio::awaitable<void> sweep() {
    std::string cursor = "0-0";
    for (int page = 0; page < 10 && running; ++page) {
      auto r = co_await commands.command("XAUTOCLAIM", settings.stream, settings.group, settings.consumer,
                                         settings.autoclaim_min_idle.count(), cursor, "COUNT", settings.autoclaim_count);
      if (!r || !r->is_array() || r->elements().size() < 2) {
        if (r && r->is_error() && r->error_code() != "NOGROUP") log.warn("XAUTOCLAIM failed: {}", r->str());
        co_return;
      }
      cursor = r->elements()[0].str();
      auto entries = parse_entries(r->elements()[1]);
      // Ids trimmed away while pending (Redis 7): forget their counters.
      if (r->elements().size() > 2 && r->elements()[2].is_array() && !r->elements()[2].elements().empty()) {
        std::vector<std::string> gone;
        for (auto& id : r->elements()[2].elements()) gone.push_back(id.str());
        redis::request forget;
        forget.push_with({"HDEL", attempts_key(settings.stream)}, gone);
        co_await commands.exec(std::move(forget));
      }
      co_await take_over(std::move(entries));
      if (cursor == "0-0") break;
    }
  }

  // Entries this consumer already holds in the group's pending list from an earlier run
  // under the same name (a crash, or a drain cut short) are taken back at start instead
  // of waiting for another consumer's sweep after autoclaim_min_idle. Nothing else can
  // be processing them: they are delivered to this name, which this process now owns.
  asio::awaitable<void> recover_own() {
    std::string after = "0";
    std::size_t recovered = 0;
    for (int page = 0; page < 100 && running; ++page) {
      auto r = co_await commands.command("XREADGROUP", "GROUP", settings.group, settings.consumer, "COUNT",
                                         settings.read_count * 10, "STREAMS", settings.stream, after);
      if (!r || r->is_error()) {
        log.warn("reading this consumer's pending entries failed ({}); autoclaim will take them",
                 r ? r->str() : r.error().message());
        co_return;
      }
      auto entries = parse_xread(*r);
      if (entries.empty()) break;
      after = entries.back().id;
      recovered += entries.size();
      co_await take_over(std::move(entries));
    }
    if (recovered > 0) log.info("took back {} entries left pending by an earlier run of {}", recovered, settings.consumer);
  }

  // Processes entries taken over from the pending list (autoclaim or an earlier run): each
  // counts as an attempt, and past max_attempts it is dead-lettered instead.
  asio::awaitable<void> take_over(std::vector<stream_entry> entries) {
    // Our own entries still being processed are not retries: no attempt is counted.
    std::erase_if(entries, [this](const stream_entry& e) { return active.contains(e.id); });
    if (entries.empty()) co_return;
    redis::request counts;
    for (const auto& e : entries) counts.push("HINCRBY", attempts_key(settings.stream), e.id, 1);
    auto attempts = co_await commands.exec(std::move(counts));
    for (std::size_t i = 0; i < entries.size(); ++i) {
      auto& e = entries[i];
      if (active.contains(e.id)) continue;  // became active while the counts were written
      const auto n = attempts ? static_cast<std::uint64_t>((*attempts)[i].integer()) : 1;
      if (claimed != nullptr) claimed->inc();
      if (e.fields.empty()) {
        // Trimmed before it could be processed: nothing left to do but account for it.
        co_await dead_letter(e, "missing_data: entry was trimmed while pending", n);
      } else if (n > settings.max_attempts) {
        co_await dead_letter(e, "max_attempts_exceeded: " + std::to_string(n) + " reclaims", n);
        if (settings.after_dead_letter) co_await settings.after_dead_letter(e);
      } else {
        log.info("reclaimed {} (attempt {})", e.id, n + 1);
        dispatch(std::move(e), delivery{n, true, this});
      }
    }
  }
};

stream_consumer::stream_consumer(redis::connection& commands, redis::connection_settings blocking,
                                 consumer_settings settings, entry_handler handler, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(commands, std::move(blocking), std::move(settings), std::move(handler), metrics)) {}

stream_consumer::~stream_consumer() {
  impl_->running = false;
  impl_->blocking->stop();
  impl_->sweep_timer.cancel();
  impl_->slot_free.cancel();
  impl_->in_flight_metric = {};
}

std::string_view stream_consumer::name() const { return impl_->log.component(); }

asio::awaitable<void> stream_consumer::start() {
  auto self = impl_;
  if (self->running) co_return;
  self->running = true;
  self->blocking->start();
  spawn(self->executor, self->read_loop(), self->log.component());
  spawn(self->executor, self->sweep_loop(), self->log.component());
  // Entries left pending by a previous run of this consumer, and idle ones of dead
  // consumers, are picked up at once rather than after the first interval.
  spawn(self->executor, self->recover_own(), self->log.component());
  spawn(self->executor, self->sweep(), self->log.component());
  co_return;
}

asio::awaitable<void> stream_consumer::stop(std::chrono::milliseconds deadline) {
  auto self = impl_;
  if (!self->running) co_return;
  self->running = false;
  self->blocking->stop();
  self->sweep_timer.cancel();
  self->slot_free.cancel();
  const auto until = clock_type::now() + deadline;
  asio::steady_timer t(self->executor);
  while ((!self->active.empty() || !self->reader_done || self->ack_flush_scheduled) && clock_type::now() < until) {
    t.expires_after(std::chrono::milliseconds(5));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!self->active.empty())
    self->log.warn("{} entries still in flight at the drain deadline; they stay pending for autoclaim",
                   self->active.size());
}

asio::awaitable<void> stream_consumer::sweep() { co_await impl_->sweep(); }
std::size_t stream_consumer::in_flight() const { return impl_->active.size(); }
std::uint64_t stream_consumer::processed() const { return impl_->processed_count; }
const consumer_settings& stream_consumer::settings() const { return impl_->settings; }

}  // namespace stargazer::bus

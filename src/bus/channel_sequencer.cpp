#include "stargazer/bus/channel_sequencer.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/bus/topology.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"

#include <boost/asio.hpp>

#include <charconv>
#include <map>
#include <optional>
#include <unordered_map>

namespace stargazer::bus {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

const redis::script& mark_done_script() {
  static const redis::script s(std::string(mark_done_lua()) + "mark_done(KEYS[1], ARGV[1])\nreturn 1\n");
  return s;
}

std::uint64_t parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

}  // namespace

// A successor that stopped waiting records each unfinished predecessor as `gap:{seq}` in
// the order set, so `done` past a sequence does not make that entry look done: it still
// runs when it comes (out of order, never dropped), and its mark clears its gap member.
// One command when `done` advances (GT: never backwards, e.g. for a stalled run that
// finishes after its successors); XX: a set deleted meanwhile stays deleted. Returns
// whether `done` advanced, i.e. no earlier run of this sequence wrote its mark.
std::string_view mark_done_lua() {
  return R"lua(
local function mark_done(key, seq)
  if redis.call('ZADD', key, 'XX', 'GT', 'CH', seq, 'done') == 1 then return true end
  redis.call('ZREM', key, 'gap:' .. seq)
  return false
end
)lua";
}

struct channel_sequencer::impl : std::enable_shared_from_this<impl> {
  // Local queue of one channel: who runs now, who waits (lowest sequence first).
  struct lane {
    bool busy = false;
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::shared_ptr<asio::steady_timer>> waiting;
    std::uint64_t known_done = 0;  // highest sequence known done (saves a round trip)
  };
  using lane_key = std::pair<std::uint64_t, std::uint64_t>;  // (seq, arrival)

  impl(redis::connection& c, sequencer_settings s, metrics::registry* m)
      : conn(c), settings(std::move(s)), log("sequencer:" + settings.stream) {
    if (m != nullptr)
      gap_counter = &m->make_counter("stargazer_order_gaps_total",
                                     "Entries that stopped waiting for their predecessor", {{"stream", settings.stream}});
  }

  redis::connection& conn;
  sequencer_settings settings;
  log::logger log;
  std::unordered_map<std::string, lane> lanes;
  std::uint64_t arrivals = 0;
  std::uint64_t gap_count = 0;
  metrics::counter* gap_counter = nullptr;

  asio::awaitable<void> acquire_turn(const std::string& okey, lane_key key) {
    auto& l = lanes[okey];
    if (!l.busy && (l.waiting.empty() || key < l.waiting.begin()->first)) {
      l.busy = true;
      co_return;
    }
    auto timer = std::make_shared<asio::steady_timer>(conn.get_executor(), clock_type::time_point::max());
    l.waiting.emplace(key, timer);
    boost::system::error_code ec;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    // release_turn() handed the turn over: busy stays true for us.
  }

  void release_turn(const std::string& okey) {
    auto it = lanes.find(okey);
    if (it == lanes.end()) return;
    auto& l = it->second;
    if (!l.waiting.empty()) {
      auto next = l.waiting.begin();
      next->second->cancel();
      l.waiting.erase(next);
      return;
    }
    l.busy = false;
    // Forget idle lanes once there are many (the done cache is an optimisation only).
    if (lanes.size() > 100'000) lanes.erase(it);
  }

  asio::awaitable<void> wait_for_predecessor(const std::string& okey, lane_key key, const std::string& trace_id) {
    const auto seq = key.first;
    const auto okey_key = order_key(settings.stream, okey);
    const auto until = clock_type::now() + settings.order_wait;
    auto pause = std::chrono::milliseconds(2);
    asio::steady_timer timer(conn.get_executor());
    for (;;) {
      auto& l = lanes[okey];
      if (l.known_done + 1 >= seq) co_return;
      auto r = co_await conn.command("ZSCORE", okey_key, "done");
      if (r && r->is_bulk()) l.known_done = std::max(l.known_done, parse_u64(r->str()));
      else if (r && r->is_nil() && seq == 1) co_return;  // no order set (deleted): nothing precedes 1
      if (lanes[okey].known_done + 1 >= seq) co_return;
      if (clock_type::now() >= until) {
        co_await record_gaps(okey_key, lanes[okey].known_done, seq);
        ++gap_count;
        if (gap_counter != nullptr) gap_counter->inc();
        log.log(log::level::warn, {{"trace_id", trace_id}}, "{} seq {} waited {} ms for its predecessor; going ahead",
                okey, seq, settings.order_wait.count());
        co_return;
      }
      // A lower sequence of this channel arrived here meanwhile (e.g. reclaimed): let it go first.
      auto& lw = lanes[okey];
      if (!lw.waiting.empty() && lw.waiting.begin()->first < key) {
        release_turn(okey);
        co_await acquire_turn(okey, key);
        continue;
      }
      timer.expires_after(pause);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      pause = std::min(pause * 2, std::chrono::milliseconds(100));
    }
  }

  // Marks the sequences between `done` and `seq` as not finished (at most the 1,000
  // nearest: a gap that long means the channel's consumers were gone for hours). NX: a
  // set that expired or was deleted meanwhile comes back as publishing creates one, with
  // `done` (0) for the marks to advance and its TTL; an existing `done` stays as it is.
  asio::awaitable<void> record_gaps(const std::string& okey_key, std::uint64_t done, std::uint64_t seq) {
    std::vector<std::string> command{"ZADD", okey_key, "NX", "0", "done"};
    const auto members = command.size();
    for (auto missing = seq > 1000 + done ? seq - 1000 : done + 1; missing < seq; ++missing) {
      command.push_back("1");
      command.push_back("gap:" + std::to_string(missing));
    }
    if (command.size() == members) co_return;
    redis::request req;
    req.push_range(command);
    req.push("EXPIRE", okey_key, order_set_ttl.count());
    co_await conn.exec(std::move(req));  // best effort: without it a late predecessor is skipped
  }

  // Whether a run of this entry finished before (its mark is written and no successor
  // went ahead without it): a re-run after a lost acknowledgement then only acknowledges.
  asio::awaitable<bool> finished_before(const std::string& okey, std::uint64_t seq) {
    auto r = co_await conn.command("ZMSCORE", order_key(settings.stream, okey), "done", "gap:" + std::to_string(seq));
    if (!r || !r->is_array() || r->elements().size() != 2) co_return false;  // unknown: run it
    const auto& done = r->elements()[0];
    const bool gap = !r->elements()[1].is_nil();
    co_return done.is_bulk() && parse_u64(done.str()) >= seq && !gap;
  }

  // Counts the entry as parked while it only waits.
  struct parked_scope {
    parking_lot* lot;
    explicit parked_scope(parking_lot* l) : lot(l) {
      if (lot != nullptr) lot->enter();
    }
    ~parked_scope() {
      if (lot != nullptr) lot->leave();
    }
  };

  asio::awaitable<void> count_attempt(const std::string& entry_id, int delta) {
    co_await conn.command("HINCRBY", attempts_key(settings.stream), entry_id, delta);
  }

  asio::awaitable<bool> mark_done(const std::string& okey, std::uint64_t seq) {
    const std::vector<std::string> keys{order_key(settings.stream, okey)};
    const std::vector<std::string> args{std::to_string(seq)};
    auto r = co_await conn.eval(mark_done_script(), keys, args);
    if (!r || r->is_error()) co_return false;  // e.g. connection lost, READONLY after a failover
    auto& l = lanes[okey];
    l.known_done = std::max(l.known_done, seq);
    co_return true;
  }

  // The entry must not be acknowledged without its mark: the ack may reach Redis on a
  // later connection (e.g. to the master a failover promoted) while the mark was lost
  // with the old one, and its successors would wait for it until order_wait runs out
  // (chaos finding 6). Tries through a short outage, then leaves the entry to be run
  // again (its handler finds the work done and only the mark is written).
  asio::awaitable<bool> mark_done_before_ack(const std::string& okey, std::uint64_t seq) {
    auto pause = std::chrono::milliseconds(100);
    asio::steady_timer timer(conn.get_executor());
    for (int tries = 0;; ++tries) {
      if (co_await mark_done(okey, seq)) co_return true;
      if (tries == 4) co_return false;
      timer.expires_after(pause);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      pause = std::min(pause * 2, std::chrono::milliseconds(2000));
    }
  }

  asio::awaitable<outcome> run(const stream_entry& e, const delivery& d, const marking_body& body) {
    const std::string okey(e.field("okey"));
    order_mark mark;
    if (okey.empty()) co_return co_await body(mark);
    const auto seq = parse_u64(e.field("seq"));
    const lane_key key{seq, arrivals++};
    const std::string trace_id(e.field("trace_id"));
    // A reclaimed entry's attempt was counted when it was taken over. Only a run that
    // starts is an attempt: while the entry waits for its turn the count is given back,
    // so an entry whose workers die while it waits (again and again, e.g. behind a
    // predecessor stuck on a Redis restart) is not dead-lettered as a poison pill, and
    // the dead-lettering of one that did run cannot skip a pending predecessor.
    const bool counted = d.reclaimed && d.attempts > 0;
    if (counted) co_await count_attempt(e.id, -1);
    std::optional<parked_scope> parked(std::in_place, d.parking);
    co_await acquire_turn(okey, key);
    outcome result = outcome::retry("not run");
    try {
      const bool rerun = d.reclaimed || d.local_retry > 0;
      if (seq > 0 && rerun && co_await finished_before(okey, seq)) {
        result = outcome::ack();
      } else if (seq > 0) {
        co_await wait_for_predecessor(okey, key, trace_id);
        parked.reset();
        if (counted) co_await count_attempt(e.id, 1);
        mark = order_mark{order_key(settings.stream, okey), seq};
        result = co_await body(mark);
        if (mark.written) lanes[okey].known_done = std::max(lanes[okey].known_done, seq);
        if (result.what != outcome::kind::retry && mark.wanted()) {
          const bool marked = co_await mark_done_before_ack(okey, seq);
          if (!marked) result = outcome::retry(fmt::format("order mark {} of {} not written", seq, okey));
        }
      } else {
        parked.reset();
        distributed_lock lock(conn, settings.lock_prefix + okey, settings.lock_ttl);
        if (!co_await lock.acquire(settings.lock_wait)) {
          result = outcome::retry("lock " + lock.key() + " not acquired");
        } else {
          if (counted) co_await count_attempt(e.id, 1);
          result = co_await body(mark);
          co_await lock.release();
        }
      }
    } catch (...) {
      release_turn(okey);
      throw;
    }
    release_turn(okey);
    co_return result;
  }
};

channel_sequencer::channel_sequencer(redis::connection& conn, sequencer_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(conn, std::move(settings), metrics)) {}

channel_sequencer::~channel_sequencer() = default;

asio::awaitable<outcome> channel_sequencer::run_in_order(const stream_entry& e, const delivery& d,
                                                        const marking_body& body) {
  auto self = impl_;
  co_return co_await self->run(e, d, body);
}

asio::awaitable<void> channel_sequencer::skip(const stream_entry& e) {
  auto self = impl_;
  const std::string okey(e.field("okey"));
  const auto seq = parse_u64(e.field("seq"));
  if (!okey.empty() && seq > 0) co_await self->mark_done(okey, seq);
}

entry_handler channel_sequencer::wrap(entry_handler inner) {
  return [self = impl_, inner = std::move(inner)](const stream_entry& e, const delivery& d) -> asio::awaitable<outcome> {
    co_return co_await self->run(e, d, [&](order_mark&) { return inner(e, d); });
  };
}

std::uint64_t channel_sequencer::gaps() const { return impl_->gap_count; }

}  // namespace stargazer::bus

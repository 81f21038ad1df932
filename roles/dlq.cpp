// `stargazer dlq list|replay|purge`: operator commands on a stream's dead-letter stream
// `{stream}:dlq` (docs/protocol.md §4.4, docs/operations.md "Dead letters").
//
// One short-lived Redis connection on a single-threaded io_context; every failure ends
// the command with one line on stderr and status 1.

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/bus/topology.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/redis/connection.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <ctime>
#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::roles {
namespace {

namespace asio = boost::asio;
using bus::stream_entry;
using redis::reply;
using redis::request;

// Connecting and every command: an operator waits no longer than this.
constexpr std::chrono::milliseconds redis_timeout{3000};
// Entries fetched per XRANGE page by `--all`.
constexpr int page_size = 100;

// Ends the command: printed as "stargazer: error: <what>", status 1.
struct failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool is_dlq_field(std::string_view name) { return name.starts_with("dlq_"); }

std::optional<long long> to_number(std::string_view text) {
  long long v = 0;
  const auto* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc{} || p != end) return std::nullopt;
  return v;
}

// Unix milliseconds as "2024-01-02T03:04:05.678Z"; empty when not a timestamp.
std::string iso_time(std::string_view ms_text) {
  const auto ms = to_number(ms_text);
  if (!ms || *ms < 0) return {};
  const std::time_t secs = static_cast<std::time_t>(*ms / 1000);
  std::tm tm{};
  if (gmtime_r(&secs, &tm) == nullptr) return {};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, *ms % 1000);
}

// A value for the text listing: bare when it is one plain word, JSON-quoted otherwise,
// "-" when the field is absent.
std::string text_value(const stream_entry& e, std::string_view name) {
  if (!e.has(name)) return "-";
  const auto v = e.field(name);
  const bool plain = !v.empty() && std::none_of(v.begin(), v.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f || c == '"' || c == '\\';
  });
  return plain ? std::string(v) : json::quoted(v);
}

std::string text_line(const stream_entry& e) {
  std::string line = fmt::format("{} original={} reason={} attempts={} consumer={}", e.id, text_value(e, "dlq_id"),
                                 text_value(e, "dlq_reason"), text_value(e, "dlq_attempts"),
                                 text_value(e, "dlq_consumer"));
  if (e.has("trace_id")) line += " trace_id=" + text_value(e, "trace_id");
  const auto time = iso_time(e.field("dlq_ts"));
  line += " time=" + (time.empty() ? text_value(e, "dlq_ts") : time);
  return line;
}

std::string json_string_or_null(const stream_entry& e, std::string_view name) {
  return e.has(name) ? json::quoted(e.field(name)) : std::string("null");
}

std::string json_number_or_string(const stream_entry& e, std::string_view name) {
  if (!e.has(name)) return "null";
  if (const auto n = to_number(e.field(name))) return std::to_string(*n);
  return json::quoted(e.field(name));
}

std::string json_line(const stream_entry& e) {
  std::string out = "{\"id\":" + json::quoted(e.id);
  out += ",\"original_id\":" + json_string_or_null(e, "dlq_id");
  out += ",\"reason\":" + json_string_or_null(e, "dlq_reason");
  out += ",\"attempts\":" + json_number_or_string(e, "dlq_attempts");
  out += ",\"consumer\":" + json_string_or_null(e, "dlq_consumer");
  out += ",\"group\":" + json_string_or_null(e, "dlq_group");
  out += ",\"stream\":" + json_string_or_null(e, "dlq_stream");
  if (e.has("trace_id")) out += ",\"trace_id\":" + json::quoted(e.field("trace_id"));
  out += ",\"dlq_ts\":" + json_number_or_string(e, "dlq_ts");
  const auto time = iso_time(e.field("dlq_ts"));
  out += ",\"time\":" + (time.empty() ? std::string("null") : json::quoted(time));
  out += ",\"fields\":[";
  bool first = true;
  for (const auto& [k, v] : e.fields) {
    if (is_dlq_field(k)) continue;
    out += (first ? "" : ",") + json::quoted(k);
    first = false;
  }
  return out + "]}";
}

std::string entries_word(std::size_t n) { return n == 1 ? "entry" : "entries"; }

// The reply of a single command, or a failure naming `what`.
reply checked(result<reply> r, std::string_view what) {
  if (!r) throw failure(fmt::format("{}: {}", what, r.error().message()));
  if (r->is_error()) throw failure(fmt::format("{}: {}", what, r->str()));
  return std::move(*r);
}

class dlq_session {
public:
  dlq_session(redis::connection& conn, const parsed_command& cmd, std::string stream)
      : conn_(conn),
        cmd_(cmd),
        stream_(std::move(stream)),
        dlq_(bus::dead_letter_stream(stream_)),
        maxlen_(std::to_string(std::max<std::uint64_t>(1000, cmd.cfg.stream_maxlen))) {}

  asio::awaitable<int> run() {
    if (!co_await conn_.wait_connected(redis_timeout)) {
      const auto stats = conn_.stats();
      throw failure(fmt::format("cannot reach Redis at {} within {} s{}", target(), redis_timeout.count() / 1000,
                                stats.last_error.empty() ? std::string() : ": " + stats.last_error));
    }
    co_await require_stream_type(dlq_);
    switch (cmd_.what) {
      case command::dlq_list: co_await list(); break;
      case command::dlq_replay: co_await replay(); break;
      case command::dlq_purge: co_await purge(); break;
      default: throw failure("not a dlq command");
    }
    co_return 0;
  }

private:
  std::string target() const {
    const auto& cfg = cmd_.cfg;
    if (!cfg.redis_sentinels.empty()) {
      std::string list;
      for (const auto& s : cfg.redis_sentinels) list += (list.empty() ? "" : ",") + s;
      return fmt::format("sentinels {} (master '{}')", list, cfg.redis_sentinel_master);
    }
    return redis::redact_url(cfg.redis_url.empty() ? "redis://127.0.0.1:6379" : cfg.redis_url);
  }

  // MULTI/EXEC does not roll back: an XADD failing at EXEC time on a key of another type
  // would still let the XDEL run. Refuse such keys before touching anything.
  asio::awaitable<void> require_stream_type(const std::string& key) {
    auto r = checked(co_await conn_.command("TYPE", key), "TYPE " + key);
    if (r.str() != "stream" && r.str() != "none")
      throw failure(fmt::format("'{}' is a {}, not a stream", key, r.str()));
  }

  asio::awaitable<std::vector<stream_entry>> range(std::string start, std::string end, long long count) {
    auto r = checked(co_await conn_.command("XRANGE", dlq_, start, end, "COUNT", count), "XRANGE " + dlq_);
    co_return bus::parse_entries(r);
  }

  // The entries named by --id, in the order given; fails naming every id that is not in
  // the DLQ before anything is changed.
  asio::awaitable<std::vector<stream_entry>> chosen_entries() {
    std::vector<stream_entry> found;
    std::vector<std::string> unknown;
    std::vector<std::string> seen;
    for (const auto& id : cmd_.dlq.ids) {
      if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
      seen.push_back(id);
      auto entries = co_await range(id, id, 1);
      if (entries.empty())
        unknown.push_back(id);
      else
        found.push_back(std::move(entries.front()));
    }
    if (!unknown.empty()) {
      std::string ids;
      for (const auto& id : unknown) ids += (ids.empty() ? "" : ", ") + id;
      throw failure(fmt::format("no {} {} in {}; nothing was changed", unknown.size() == 1 ? "entry" : "entries", ids,
                                dlq_));
    }
    co_return found;
  }

  asio::awaitable<void> list() {
    const auto entries = co_await range("-", "+", static_cast<long long>(cmd_.dlq.count));
    for (const auto& e : entries) std::cout << (cmd_.dlq.json ? json_line(e) : text_line(e)) << '\n';
    std::cout.flush();
    if (cmd_.dlq.json) co_return;
    auto len = checked(co_await conn_.command("XLEN", dlq_), "XLEN " + dlq_);
    const auto total = static_cast<std::size_t>(std::max(0LL, len.integer()));
    if (total == 0)
      std::cerr << dlq_ << " is empty\n";
    else if (total > entries.size())
      std::cerr << fmt::format("{} of {} entries in {} shown (oldest first); --count shows more\n", entries.size(),
                               total, dlq_);
  }

  // XADD of the original fields onto the stream and XDEL from the DLQ, in one MULTI/EXEC.
  asio::awaitable<void> replay_one(const stream_entry& e) {
    std::vector<std::string> fields;
    for (const auto& [k, v] : e.fields) {
      if (is_dlq_field(k)) continue;
      fields.push_back(k);
      fields.push_back(v);
    }
    if (fields.empty()) throw failure(fmt::format("{} in {} has no original fields to replay", e.id, dlq_));
    request req;  // not retried once written: XADD is not idempotent
    req.push("MULTI");
    req.push_with({"XADD", stream_, "MAXLEN", "~", maxlen_, "*"}, fields);
    req.push("XDEL", dlq_, e.id);
    req.push("EXEC");
    auto r = co_await conn_.exec(std::move(req));
    if (!r)
      throw failure(fmt::format("replaying {}: {} (check with `stargazer dlq list` whether it was replayed)", e.id,
                                r.error().message()));
    const auto& exec = r->back();
    if (exec.is_error()) throw failure(fmt::format("replaying {}: {}", e.id, exec.str()));
    if (!exec.is_array() || exec.elements().size() != 2 || !exec.elements()[0].is_bulk())
      throw failure(fmt::format("replaying {}: unexpected reply {}", e.id, exec.debug_string()));
    if (exec.elements()[1].integer() != 1)
      log::logger("dlq").warn("{} was removed from {} by someone else meanwhile; it may have been replayed twice",
                              e.id, dlq_);
    ++done_;
  }

  asio::awaitable<void> replay() {
    co_await require_stream_type(stream_);
    try {
      if (!cmd_.dlq.all) {
        const auto entries = co_await chosen_entries();
        for (const auto& e : entries) co_await replay_one(e);
      } else {
        // Only entries up to the newest one now: a poison message dead-lettered again
        // while this runs gets a newer id and is not replayed in a loop.
        auto newest = checked(co_await conn_.command("XREVRANGE", dlq_, "+", "-", "COUNT", 1), "XREVRANGE " + dlq_);
        const auto last = bus::parse_entries(newest);
        std::string start = "-";
        while (!last.empty()) {
          const auto page = co_await range(start, last.front().id, page_size);
          if (page.empty()) break;
          for (const auto& e : page) co_await replay_one(e);
          start = "(" + page.back().id;
        }
      }
    } catch (const failure& f) {
      if (done_ == 0) throw;
      throw failure(fmt::format("replayed {} {}, then stopped: {}", done_, entries_word(done_), f.what()));
    }
    std::cout << fmt::format("replayed {} {} from {} onto {}\n", done_, entries_word(done_), dlq_, stream_);
  }

  asio::awaitable<void> purge() {
    std::size_t purged = 0;
    if (!cmd_.dlq.all) {
      const auto entries = co_await chosen_entries();
      std::vector<std::string> ids;
      for (const auto& e : entries) ids.push_back(e.id);
      request req;
      req.push_with({"XDEL", dlq_}, ids);
      auto r = checked(co_await conn_.exec_one(std::move(req)), "XDEL " + dlq_);
      purged = static_cast<std::size_t>(std::max(0LL, r.integer()));
    } else {
      request req;
      req.push("MULTI");
      req.push("XLEN", dlq_);
      req.push("DEL", dlq_);
      req.push("EXEC");
      auto r = co_await conn_.exec(std::move(req));
      if (!r) throw failure(fmt::format("purging {}: {}", dlq_, r.error().message()));
      const auto& exec = r->back();
      if (exec.is_error()) throw failure(fmt::format("purging {}: {}", dlq_, exec.str()));
      if (!exec.is_array() || exec.elements().size() != 2 || !exec.elements()[0].is_integer())
        throw failure(fmt::format("purging {}: unexpected reply {}", dlq_, exec.debug_string()));
      purged = static_cast<std::size_t>(std::max(0LL, exec.elements()[0].integer()));
    }
    std::cout << fmt::format("purged {} {} from {}\n", purged, entries_word(purged), dlq_);
  }

  redis::connection& conn_;
  const parsed_command& cmd_;
  std::string stream_;
  std::string dlq_;
  std::string maxlen_;
  std::size_t done_ = 0;
};

}  // namespace

int run_dlq(const parsed_command& cmd) {
  // Operator output goes to stdout; the connection's info lines would only be noise on
  // stderr, so the default level is raised to warn (debug and trace stay available).
  auto level = *log::parse_level(cmd.cfg.log_level);
  if (level == log::level::info) level = log::level::warn;
  log::configure(level, *log::parse_format(cmd.cfg.log_format));

  redis::connection_settings settings;
  try {
    settings = command_redis_settings(cmd.cfg, "dlq", redis_timeout);
  } catch (const std::exception& e) {
    std::cerr << "stargazer: error: --redis-url: " << e.what() << "\n";
    return 2;
  }
  const auto stream = cmd.dlq.stream.empty() ? bus::topology::from_environment().inbound_stream : cmd.dlq.stream;

  asio::io_context io(1);
  redis::connection conn(io.get_executor(), settings);
  dlq_session session(conn, cmd, stream);
  int status = 1;
  conn.start();
  asio::co_spawn(io, session.run(), [&](std::exception_ptr e, int rc) {
    status = rc;
    if (e) {
      status = 1;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "stargazer: error: " << ex.what() << "\n";
      }
    }
    conn.stop();
  });
  io.run();
  std::cout.flush();
  return status;
}

}  // namespace stargazer::roles

#include "stargazer/tools/mcp/servers.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdlib>

namespace stargazer::tools::mcp {

namespace asio = boost::asio;
using namespace std::chrono_literals;

std::string origin_of(std::string_view server) { return fmt::format("mcp:{}", server); }

std::string to_json(const catalog_entry& e) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  const auto str = [&](std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); };
  w.StartObject();
  w.Key("server"); str(e.server);
  w.Key("state"); str(e.state);
  w.Key("detail"); str(e.detail);
  w.Key("node"); str(e.node);
  w.Key("updated_ms"); w.Int64(e.updated_ms);
  w.Key("timeout_ms"); w.Int64(e.timeout.count());
  w.Key("tools");
  w.StartArray();
  for (const auto& t : e.tools) {
    w.StartObject();
    w.Key("name"); str(t.name);
    w.Key("description"); str(t.description);
    w.Key("parameters"); w.RawValue(t.parameters_json.data(), t.parameters_json.size(), rapidjson::kObjectType);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

std::variant<catalog_entry, std::string> parse_catalog_entry(std::string_view text) {
  auto parsed = json::parse_object(text, 72);
  if (auto* why = std::get_if<std::string>(&parsed)) return "a catalog entry: " + *why;
  const auto& doc = std::get<rapidjson::Document>(parsed);
  catalog_entry e;
  e.server = json::string_member(doc, "server");
  e.state = json::string_member(doc, "state");
  e.detail = json::string_member(doc, "detail");
  e.node = json::string_member(doc, "node");
  if (const auto it = doc.FindMember("updated_ms"); it != doc.MemberEnd() && it->value.IsInt64())
    e.updated_ms = it->value.GetInt64();
  if (const auto it = doc.FindMember("timeout_ms"); it != doc.MemberEnd() && it->value.IsInt64())
    e.timeout = std::chrono::milliseconds(it->value.GetInt64());
  const auto tools = doc.FindMember("tools");
  if (e.server.empty() || tools == doc.MemberEnd() || !tools->value.IsArray())
    return std::string("a catalog entry without a server or its tools");
  for (const auto& t : tools->value.GetArray()) {
    const auto params = t.FindMember("parameters");
    if (!t.IsObject() || params == t.MemberEnd() || !params->value.IsObject()) continue;
    e.tools.push_back({json::string_member(t, "name"), json::string_member(t, "description"), json::to_string(params->value)});
  }
  return e;
}

namespace {

asio::awaitable<std::optional<std::int64_t>> redis_time_ms(redis::connection& redis) {
  auto now = co_await redis.command("TIME");
  if (!now || !now->is_array() || now->elements().size() != 2) co_return std::nullopt;
  const auto seconds = now->elements()[0].to_integer();
  const auto micros = now->elements()[1].to_integer();
  if (!seconds || !micros) co_return std::nullopt;
  co_return *seconds * 1000 + *micros / 1000;
}

// The description the model reads: the server's, or its title, or a word on the origin.
std::string description_of(const tool_descriptor& t, std::string_view server) {
  if (!t.description.empty()) return t.description;
  if (!t.title.empty()) return t.title;
  return fmt::format("The '{}' tool of the MCP server '{}'.", t.name, server);
}

}  // namespace

asio::awaitable<result<std::vector<catalog_entry>>> read_catalog(redis::connection& redis) {
  auto all = co_await redis.command("HGETALL", catalog_key);
  if (!all) co_return all.error();
  const auto now = co_await redis_time_ms(redis);
  std::vector<catalog_entry> out;
  const auto& items = all->elements();
  for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
    auto parsed = parse_catalog_entry(items[i + 1].str());
    if (auto* why = std::get_if<std::string>(&parsed)) {
      log::logger("mcp").warn("{} {}: {}", catalog_key, items[i].str(), *why);
      continue;
    }
    auto& e = std::get<catalog_entry>(parsed);
    if (now && *now - e.updated_ms > std::chrono::milliseconds(catalog_stale_after).count()) {
      e.detail = fmt::format("no process has reported it for {} s (last: {} on {})", (*now - e.updated_ms) / 1000,
                             e.state, e.node);
      e.state = std::string(to_string(server_state::down));
    }
    out.push_back(std::move(e));
  }
  co_return out;
}

// ---------------------------------------------------------------------------------------
// server_pool

struct server_pool::impl : std::enable_shared_from_this<impl> {
  struct server {
    server_config config;
    std::unique_ptr<client> connection;
    std::string registered;  // the tool list last put in the registry (to skip recompiling)
    server_state last_state = server_state::starting;
    metrics::callback_handle up_gauge;
  };

  impl(asio::any_io_executor e, registry& r, pool_settings s, redis::connection* c, metrics::registry* m,
       health_registry* h)
      : ex(std::move(e)), tools(r), settings(std::move(s)), catalog(c), metrics(m), health(h), refresh(ex) {}

  asio::any_io_executor ex;
  registry& tools;
  pool_settings settings;
  redis::connection* catalog;
  metrics::registry* metrics;
  health_registry* health;
  log::logger log{"mcp"};
  std::vector<std::shared_ptr<server>> servers;
  asio::steady_timer refresh;
  bool stopping = false;
  bool publishing = false;
  bool publish_again = false;

  std::unique_ptr<transport> make_transport(const server_config& c) const {
    if (c.is_stdio()) {
      stdio_settings s;
      s.server_name = c.name;
      s.command = c.command;
      s.args = c.args;
      s.environment = child_environment(c, [](const char* name) { return std::getenv(name); });
      s.working_directory = c.cwd;
      s.max_message_bytes = settings.max_message_bytes;
      return make_stdio_transport(ex, std::move(s));
    }
    http_settings s;
    s.server_name = c.name;
    s.url = c.url;
    s.headers = c.headers;
    if (!c.bearer_token_env.empty())
      if (const char* token = std::getenv(c.bearer_token_env.c_str()); token != nullptr && *token != '\0')
        s.headers["authorization"] = fmt::format("Bearer {}", token);
    s.max_message_bytes = settings.max_message_bytes;
    return make_http_transport(ex, std::move(s));
  }

  tool make_tool(const std::shared_ptr<server>& s, const tool_descriptor& d, std::string name) {
    tool t;
    t.name = std::move(name);
    t.description = description_of(d, s->config.name);
    t.parameters_json = d.input_schema_json;
    // The client cancels at the server's timeout and says so; the registry's deadline
    // behind it only catches a client that failed to.
    t.deadline = s->config.timeout + 2s;
    std::weak_ptr<server> weak = s;
    auto* m = metrics;
    t.handler = [weak, m, server_name = s->config.name, tool_name = d.name, timeout = s->config.timeout](
                    const rapidjson::Value& args, call_context&) -> asio::awaitable<tool_output> {
      auto target = weak.lock();
      if (!target || !target->connection) throw tool_error(fmt::format("the MCP server '{}' is gone", server_name));
      const auto started = std::chrono::steady_clock::now();
      auto arguments = json::to_string(args);
      auto answer = co_await target->connection->call_tool(tool_name, std::move(arguments), timeout);
      const char* outcome = "ok";
      std::string failure;
      tool_output out;
      if (auto* why = std::get_if<std::string>(&answer)) {
        outcome = "failed";
        failure = std::move(*why);
      } else if (auto& result = std::get<call_outcome>(answer); result.is_error) {
        outcome = "tool_error";
        failure = result.text.empty() ? std::string("the tool reported an error") : std::move(result.text);
      } else {
        out.text = std::move(result.text);
      }
      if (m != nullptr) {
        const metrics::label_set labels{{"server", server_name}, {"tool", tool_name}};
        auto with_outcome = labels;
        with_outcome.emplace_back("outcome", outcome);
        m->make_counter("stargazer_mcp_tool_calls_total", "MCP tool calls by server, tool and outcome", with_outcome).inc();
        m->make_histogram("stargazer_mcp_tool_call_seconds", "MCP tool call latency", metrics::latency_buckets(), labels)
            .observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      }
      if (!failure.empty()) throw tool_error(failure);
      co_return out;
    };
    return t;
  }

  // Puts a server's current tools and state into the registry.
  void sync(const std::shared_ptr<server>& s) {
    const auto status = s->connection->status();
    const auto origin = origin_of(s->config.name);
    std::string fingerprint;
    for (const auto& d : s->connection->tools()) fingerprint += d.name + '\0' + d.description + '\0' + d.input_schema_json + '\n';
    if (fingerprint != s->registered) {
      std::vector<tool> list;
      for (const auto& d : s->connection->tools()) {
        auto name = registry_name(s->config.name, d.name);
        if (!name) {
          log.warn("server '{}': tool '{}' left out: '{}__{}' breaks the model API's name rule ([a-zA-Z0-9_-], at most 64)",
                   s->config.name, utf8_prefix(d.name, 80), s->config.name, utf8_prefix(d.name, 80));
          continue;
        }
        list.push_back(make_tool(s, d, std::move(*name)));
      }
      for (const auto& refused : tools.replace_origin(origin, std::move(list)))
        log.error("server '{}': a tool is refused: {}", s->config.name, refused);
      s->registered = std::move(fingerprint);
      publish();  // remote workers learn the new list now, not at the next refresh
    }
    const bool ready = status.state == server_state::ready;
    tools.set_origin_available(origin, ready,
                               ready ? std::string() : fmt::format("its MCP server is {}: {}", to_string(status.state), status.detail));
    if (status.state != s->last_state) {
      s->last_state = status.state;
      publish();
    }
  }

  // Writes every server's entry to the catalog (in the background; one write at a time,
  // the last state wins).
  void publish() {
    if (catalog == nullptr || stopping) return;
    if (publishing) {
      publish_again = true;
      return;
    }
    publishing = true;
    auto self = shared_from_this();
    spawn(
        ex,
        [self]() -> asio::awaitable<void> {
          do {
            self->publish_again = false;
            co_await self->write_catalog();
          } while (self->publish_again && !self->stopping);
          self->publishing = false;
        },
        "mcp-catalog");
  }

  asio::awaitable<void> write_catalog() {
    if (catalog == nullptr || servers.empty()) co_return;
    const auto now = co_await redis_time_ms(*catalog);
    if (!now) co_return;
    std::vector<std::string> args{"HSET", std::string(catalog_key)};
    const auto listing = tools.list();
    for (const auto& s : servers) {
      const auto status = s->connection->status();
      catalog_entry e{s->config.name, std::string(to_string(status.state)), status.detail, settings.node_id, *now,
                      s->config.timeout, {}};
      for (const auto& t : listing)
        if (t.origin == origin_of(s->config.name))
          if (const auto* def = tools.find(t.name)) e.tools.push_back({t.name, def->description, def->parameters_json});
      args.push_back(s->config.name);
      args.push_back(to_json(e));
    }
    redis::request req;
    req.push_range(args);
    req.push("EXPIRE", catalog_key, 86400);
    auto written = co_await catalog->exec(std::move(req));
    if (!written) log.warn("could not write {}: {}", catalog_key, written.error().message());
  }

  asio::awaitable<void> refresh_loop() {
    auto self = shared_from_this();
    while (!stopping) {
      refresh.expires_after(catalog_refresh);
      boost::system::error_code ec;
      co_await refresh.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping) break;
      publish();
    }
  }
};

server_pool::server_pool(asio::any_io_executor ex, std::vector<server_config> servers, registry& tools,
                         pool_settings settings, redis::connection* catalog, metrics::registry* metrics,
                         health_registry* health)
    : impl_(std::make_shared<impl>(std::move(ex), tools, std::move(settings), catalog, metrics, health)) {
  for (auto& c : servers) {
    if (!c.enabled) {
      impl_->log.info("server '{}' is disabled in the configuration", c.name);
      continue;
    }
    auto s = std::make_shared<impl::server>();
    s->config = std::move(c);
    auto client_cfg = impl_->settings.client;
    client_cfg.client_version = impl_->settings.client_version;
    const auto config = s->config;
    std::weak_ptr<impl> weak_pool = impl_;
    s->connection = std::make_unique<client>(
        impl_->ex, s->config.name,
        [weak_pool, config]() -> std::unique_ptr<transport> {
          auto pool = weak_pool.lock();
          return pool ? pool->make_transport(config) : nullptr;
        },
        client_cfg);
    impl_->servers.push_back(std::move(s));
  }
}

server_pool::~server_pool() {
  impl_->stopping = true;
  impl_->refresh.cancel();
}

asio::awaitable<void> server_pool::start() {
  auto self = impl_;
  for (const auto& s : self->servers) {
    std::weak_ptr<impl::server> weak_server = s;
    std::weak_ptr<impl> weak_pool = self;
    s->connection->on_change([weak_server, weak_pool] {
      auto pool = weak_pool.lock();
      auto target = weak_server.lock();
      if (pool && target && !pool->stopping) pool->sync(target);
    });
    self->sync(s);  // registered as unavailable until the server is ready
    if (self->health != nullptr) {
      // A server that is down makes its tools unavailable, not the process unready.
      self->health->add("mcp:" + s->config.name, [weak_server]() -> readiness {
        auto target = weak_server.lock();
        if (!target) return {true, "stopped"};
        const auto st = target->connection->status();
        return {true, fmt::format("{}{}{}", to_string(st.state), st.detail.empty() ? "" : ": ", st.detail)};
      });
    }
    if (self->metrics != nullptr)
      s->up_gauge = self->metrics->make_gauge_callback(
          "stargazer_mcp_server_up", "1 while the MCP server is connected and initialised", {{"server", s->config.name}},
          [weak_server] {
            auto target = weak_server.lock();
            return target && target->connection->status().state == server_state::ready ? 1.0 : 0.0;
          });
    s->connection->start();
  }
  if (!self->servers.empty()) {
    self->log.info("{} MCP server(s) starting", self->servers.size());
    spawn(self->ex, [self]() -> asio::awaitable<void> { co_await self->refresh_loop(); }, "mcp-catalog");
  }
  co_return;
}

asio::awaitable<void> server_pool::stop(std::chrono::milliseconds deadline) {
  auto self = impl_;
  self->stopping = true;
  self->refresh.cancel();
  // Not offered from now on; the children stop side by side, within the deadline (one that
  // is still running then is killed with its transport).
  struct stopping_state {
    explicit stopping_state(asio::any_io_executor ex) : all_stopped(std::move(ex)) {}
    asio::steady_timer all_stopped;
    std::size_t left = 0;
  };
  auto state = std::make_shared<stopping_state>(self->ex);
  state->all_stopped.expires_after(deadline);
  state->left = self->servers.size();
  for (const auto& s : self->servers) {
    self->tools.set_origin_available(origin_of(s->config.name), false, "stopping");
    s->up_gauge = {};
    spawn(
        self->ex,
        [s, state]() -> asio::awaitable<void> {
          co_await s->connection->stop();
          if (--state->left == 0) state->all_stopped.cancel();
        },
        "mcp:" + s->config.name);
  }
  if (state->left > 0) {
    boost::system::error_code ec;
    co_await state->all_stopped.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  // Readers see the servers stopped at once, not only once the entries go stale.
  co_await self->write_catalog();
}

std::vector<server_status> server_pool::statuses() const {
  std::vector<server_status> out;
  for (const auto& s : impl_->servers) out.push_back(s->connection->status());
  return out;
}

// ---------------------------------------------------------------------------------------
// catalog_reader

struct catalog_reader::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& r, registry& t, std::chrono::milliseconds i)
      : redis(r), tools(t), interval(i), timer(r.get_executor()) {}
  redis::connection& redis;
  registry& tools;
  std::chrono::milliseconds interval;
  asio::steady_timer timer;
  bool stopping = false;
  std::map<std::string, std::string> registered;  // server -> its tools' JSON as last registered
  log::logger log{"mcp-catalog"};

  asio::awaitable<void> read_once() {
    auto entries = co_await read_catalog(redis);
    if (!entries) {
      log.debug("cannot read {}: {}", catalog_key, entries.error().message());
      co_return;
    }
    std::map<std::string, std::string> seen;
    for (const auto& e : *entries) {
      const auto origin = origin_of(e.server);
      std::string fingerprint;
      for (const auto& t : e.tools) fingerprint += t.name + '\0' + t.description + '\0' + t.parameters_json + '\n';
      if (registered[e.server] != fingerprint) {
        std::vector<tool> list;
        for (const auto& t : e.tools) {
          tool def;
          def.name = t.name;
          def.description = t.description;
          def.parameters_json = t.parameters_json;
          def.deadline = e.timeout + 2s;
          def.handler = [server = e.server](const rapidjson::Value&, call_context&) -> asio::awaitable<tool_output> {
            throw tool_error(fmt::format("the MCP server '{}' runs on the tools service (--tools-mode=remote)", server));
            co_return tool_output{};
          };
          list.push_back(std::move(def));
        }
        for (const auto& refused : tools.replace_origin(origin, std::move(list)))
          log.error("server '{}': a tool is refused: {}", e.server, refused);
        registered[e.server] = fingerprint;
      }
      const bool ready = e.state == to_string(server_state::ready);
      tools.set_origin_available(origin, ready,
                                 ready ? std::string() : fmt::format("its MCP server is {}: {}", e.state, e.detail));
      seen.emplace(e.server, "");
    }
    for (const auto& [server, fingerprint] : registered)
      if (seen.count(server) == 0)
        tools.set_origin_available(origin_of(server), false, "no tools process serves it any more");
  }
};

catalog_reader::catalog_reader(redis::connection& redis, registry& tools, std::chrono::milliseconds interval)
    : impl_(std::make_shared<impl>(redis, tools, interval)) {}

catalog_reader::~catalog_reader() {
  impl_->stopping = true;
  impl_->timer.cancel();
}

asio::awaitable<void> catalog_reader::start() {
  auto self = impl_;
  co_await self->read_once();
  spawn(
      self->redis.get_executor(),
      [self]() -> asio::awaitable<void> {
        while (!self->stopping) {
          self->timer.expires_after(self->interval);
          boost::system::error_code ec;
          co_await self->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          if (self->stopping) break;
          co_await self->read_once();
        }
      },
      "mcp-catalog");
}

asio::awaitable<void> catalog_reader::stop(std::chrono::milliseconds) {
  impl_->stopping = true;
  impl_->timer.cancel();
  co_return;
}

}  // namespace stargazer::tools::mcp

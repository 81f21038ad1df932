#include "stargazer/tools/registry.hpp"

#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/tools/json_schema.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace stargazer::tools {

namespace asio = boost::asio;

constexpr unsigned max_argument_depth = 32;

std::map<std::string, std::string> call_context::to_map() const {
  return {{"platform", platform}, {"channel_id", channel_id}, {"user_id", user_id},
          {"user_name", user_name}, {"message_id", message_id}};
}

call_context call_context::from_map(const std::map<std::string, std::string>& m) {
  const auto get = [&](const char* key) {
    const auto it = m.find(key);
    return it == m.end() ? std::string() : it->second;
  };
  call_context c;
  c.platform = get("platform");
  c.channel_id = get("channel_id");
  c.user_id = get("user_id");
  c.user_name = get("user_name");
  c.message_id = get("message_id");
  return c;
}

namespace {

bool listed(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

// Deny wins; a non-empty allow list must name the value.
bool allows(const permission& p, const call_context& ctx) {
  if (listed(p.deny_platforms, ctx.platform) || listed(p.deny_channels, ctx.channel_id) ||
      listed(p.deny_users, ctx.user_id))
    return false;
  if (!p.allow_platforms.empty() && !listed(p.allow_platforms, ctx.platform)) return false;
  if (!p.allow_channels.empty() && !listed(p.allow_channels, ctx.channel_id)) return false;
  if (!p.allow_users.empty() && !listed(p.allow_users, ctx.user_id)) return false;
  return true;
}

tool_output failed(std::string why) { return tool_output{error_text(why), {}}; }

// Cuts `text` to at most `limit` bytes on a UTF-8 boundary, saying so.
std::string limited(std::string text, std::size_t limit) {
  if (text.size() <= limit) return text;
  text.resize(utf8_prefix(text, limit).size());
  return text + fmt::format("\n[result cut at {} bytes]", limit);
}

}  // namespace

struct registry::impl {
  explicit impl(registry_settings s) : settings(std::move(s)) {}

  struct entry {
    tool definition;
    compiled_schema schema;
  };

  registry_settings settings;
  std::map<std::string, entry, std::less<>> tools;
  std::map<std::string, std::string, std::less<>> unavailable_origins;  // origin -> why

  const std::string* unavailable(const tool& t) const {
    if (t.origin.empty()) return nullptr;
    const auto it = unavailable_origins.find(t.origin);
    return it == unavailable_origins.end() ? nullptr : &it->second;
  }
  log::logger log{"tools"};
};

registry::registry(registry_settings settings) : impl_(std::make_shared<impl>(std::move(settings))) {}
registry::~registry() = default;

void registry::add(tool t) {
  if (impl_->tools.count(t.name) != 0) throw std::invalid_argument("tool '" + t.name + "' is registered twice");
  auto schema = compiled_schema::compile(t.parameters_json);
  if (auto* why = std::get_if<std::string>(&schema))
    throw std::invalid_argument("tool '" + t.name + "': its parameter schema is refused: " + *why);
  auto name = t.name;
  impl_->tools.emplace(std::move(name), impl::entry{std::move(t), std::move(std::get<compiled_schema>(schema))});
}

std::vector<std::string> registry::replace_origin(const std::string& origin, std::vector<tool> tools) {
  for (auto it = impl_->tools.begin(); it != impl_->tools.end();)
    it = it->second.definition.origin == origin ? impl_->tools.erase(it) : std::next(it);
  std::vector<std::string> refused;
  for (auto& t : tools) {
    t.origin = origin;
    if (const auto* held = find(t.name)) {
      refused.push_back(fmt::format("'{}' is already a tool of {}", t.name, held->origin.empty() ? "built-in" : held->origin));
      continue;
    }
    try {
      add(std::move(t));
    } catch (const std::invalid_argument& e) {
      refused.push_back(e.what());
    }
  }
  return refused;
}

void registry::set_origin_available(const std::string& origin, bool available, std::string reason) {
  if (available) impl_->unavailable_origins.erase(origin);
  else impl_->unavailable_origins[origin] = std::move(reason);
}

std::vector<tool_listing> registry::list() const {
  std::vector<tool_listing> out;
  for (const auto& [name, e] : impl_->tools) {
    tool_listing l{name, e.definition.description, e.definition.origin.empty() ? "built-in" : e.definition.origin};
    if (const auto* why = impl_->unavailable(e.definition)) {
      l.available = false;
      l.unavailable_reason = *why;
    }
    out.push_back(std::move(l));
  }
  return out;
}

void registry::set_permissions(std::map<std::string, permission> permissions) {
  impl_->settings.permissions = std::move(permissions);
}

const tool* registry::find(std::string_view name) const {
  const auto it = impl_->tools.find(name);
  return it == impl_->tools.end() ? nullptr : &it->second.definition;
}

bool registry::permitted(std::string_view name, const call_context& ctx) const {
  const auto& rules = impl_->settings.permissions;
  if (const auto all = rules.find("*"); all != rules.end() && !allows(all->second, ctx)) return false;
  if (const auto it = rules.find(std::string(name)); it != rules.end() && !allows(it->second, ctx)) return false;
  return true;
}

std::vector<llm::tool_definition> registry::definitions(const call_context& ctx) const {
  std::vector<llm::tool_definition> out;
  for (const auto& [name, e] : impl_->tools)
    if (impl_->unavailable(e.definition) == nullptr && permitted(name, ctx)) out.push_back({name, e.definition.description, e.definition.parameters_json});
  return out;
}

asio::awaitable<tool_output> registry::execute(std::string name, std::string args_json, call_context ctx) const {
  auto self = impl_;  // the registry outlives no call by contract, but the state is shared anyway
  const auto it = self->tools.find(name);
  if (it == self->tools.end()) co_return failed("unknown tool '" + name + "'");
  if (!permitted(name, ctx))
    co_return failed(fmt::format("permission denied: '{}' is not allowed here", name));
  if (const auto* why = self->unavailable(it->second.definition))
    co_return failed(fmt::format("'{}' is unavailable now: {}", name, *why));

  // The model writes the arguments: deep nesting would overflow the stack in RapidJSON's
  // recursive parser (and in handlers that serialise values), so it is refused first.
  if (json::nesting_depth(args_json) > max_argument_depth)
    co_return failed(fmt::format("the arguments are nested deeper than {} levels", max_argument_depth));
  auto args = std::make_shared<rapidjson::Document>();
  args->Parse(args_json.empty() ? "{}" : args_json.c_str());
  if (args->HasParseError() || !args->IsObject())
    co_return failed("the arguments are not a JSON object");
  if (auto problem = it->second.schema.check(*args)) co_return failed(*problem);

  // The handler runs as its own coroutine so a deadline can end the wait; a handler that
  // overruns finishes in the background with its result dropped (it owns its inputs).
  struct run_state {
    explicit run_state(asio::any_io_executor ex) : timer(ex) {}
    asio::steady_timer timer;
    std::optional<tool_output> output;
    std::string failure;
    bool done = false;
  };
  auto ex = co_await asio::this_coro::executor;
  auto state = std::make_shared<run_state>(ex);
  const auto deadline = it->second.definition.deadline.value_or(self->settings.default_deadline);
  state->timer.expires_after(deadline);
  auto context = std::make_shared<call_context>(std::move(ctx));
  spawn(
      ex,
      [state, args, context, handler = it->second.definition.handler]() -> asio::awaitable<void> {
        try {
          state->output = co_await handler(*args, *context);
        } catch (const tool_error& e) {
          state->failure = e.what();
        } catch (const std::exception& e) {
          state->failure = std::string("the tool failed: ") + e.what();
        }
        state->done = true;
        state->timer.cancel();
      },
      "tool:" + name);
  boost::system::error_code ec;
  co_await state->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (!state->done) {
    self->log.log(log::level::warn, {{"trace_id", context->trace_id}}, "tool {} passed its {} ms deadline", name,
                  deadline.count());
    co_return failed(fmt::format("'{}' did not finish within {} ms", name, deadline.count()));
  }
  if (!state->output) co_return failed(state->failure);
  auto out = std::move(*state->output);
  out.text = limited(std::move(out.text), self->settings.max_result_bytes);
  std::size_t media_bytes = 0;
  for (const auto& m : out.media) media_bytes += m.data.size();
  if (media_bytes > self->settings.max_media_bytes) {
    out.media.clear();
    out.text += fmt::format("\n[files dropped: {} bytes is over the {} byte limit]", media_bytes,
                            self->settings.max_media_bytes);
  }
  co_return out;
}

}  // namespace stargazer::tools

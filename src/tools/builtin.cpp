#include "stargazer/tools/builtin.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/redis/connection.hpp"

#include <fmt/format.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <mutex>

namespace stargazer::tools {

namespace asio = boost::asio;

namespace {

tool_output text_output(std::string text) { return tool_output{std::move(text), {}}; }

std::string format_number(double v) {
  if (std::fabs(v) < 1e15 && v == std::floor(v)) return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{:.12g}", v);
}

std::string json_string_arg(const rapidjson::Value& args, const char* name, std::string fallback = {}) {
  const auto it = args.FindMember(name);
  if (it == args.MemberEnd() || !it->value.IsString()) return fallback;
  return {it->value.GetString(), it->value.GetStringLength()};
}

int int_arg(const rapidjson::Value& args, const char* name, int fallback) {
  const auto it = args.FindMember(name);
  return it != args.MemberEnd() && it->value.IsInt() ? it->value.GetInt() : fallback;
}

// Time zone names become file paths under /usr/share/zoneinfo: only IANA-shaped names.
bool plausible_zone(const std::string& zone) {
  if (zone.empty() || zone.size() > 64 || zone.find("..") != std::string::npos || zone.front() == '/') return false;
  return zone.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") ==
         std::string::npos;
}

}  // namespace

std::optional<std::string> describe_time(std::chrono::system_clock::time_point t, const std::string& zone) {
  if (!plausible_zone(zone)) return std::nullopt;
  if (zone != "UTC" && !std::filesystem::is_regular_file("/usr/share/zoneinfo/" + zone)) return std::nullopt;
  // glibc converts through TZ only; the swap is serialized and restored. One io thread
  // per process means nothing else reads TZ meanwhile in practice.
  static std::mutex tz_mutex;
  std::lock_guard lock(tz_mutex);
  const char* previous = std::getenv("TZ");
  const std::string saved = previous ? previous : "";
  setenv("TZ", (":" + zone).c_str(), 1);
  tzset();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm local{};
  localtime_r(&seconds, &local);
  if (previous) setenv("TZ", saved.c_str(), 1);
  else unsetenv("TZ");
  tzset();
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &local);
  char weekday[16];
  std::strftime(weekday, sizeof weekday, "%A", &local);
  const long offset = local.tm_gmtoff;
  return fmt::format("{} {} (UTC{}{:02}:{:02}), {}", when, local.tm_zone ? local.tm_zone : zone.c_str(),
                     offset < 0 ? '-' : '+', std::labs(offset) / 3600, (std::labs(offset) % 3600) / 60, weekday);
}

void add_builtin_tools(registry& r, redis::connection& redis, channel_history_reader history) {
  r.add(tool{
      "current_time",
      "The current date, time and weekday in a time zone.",
      R"({"type":"object","properties":{"timezone":{"type":"string","maxLength":64,)"
      R"("description":"IANA time zone such as Europe/Paris or America/New_York; default UTC"}},"additionalProperties":false})",
      [](const rapidjson::Value& args, call_context&) -> asio::awaitable<tool_output> {
        const auto zone = json_string_arg(args, "timezone", "UTC");
        auto text = describe_time(std::chrono::system_clock::now(), zone);
        if (!text) throw tool_error("unknown time zone '" + zone + "' (use an IANA name such as Europe/Berlin)");
        co_return text_output(*text);
      }});

  r.add(tool{
      "calculator",
      "Evaluates an arithmetic expression exactly as written: + - * / % ^, parentheses, pi, e, and sqrt abs "
      "sin cos tan asin acos atan ln log log2 exp floor ceil round min max pow.",
      R"({"type":"object","properties":{"expression":{"type":"string","minLength":1,"maxLength":1000}},)"
      R"("required":["expression"],"additionalProperties":false})",
      [](const rapidjson::Value& args, call_context&) -> asio::awaitable<tool_output> {
        const auto expression = json_string_arg(args, "expression");
        auto v = evaluate_expression(expression);
        if (auto* error = std::get_if<std::string>(&v)) throw tool_error(*error);
        co_return text_output(format_number(std::get<double>(v)));
      }});

  static constexpr std::size_t max_notes = 200;
  r.add(tool{
      "remember_note",
      "Stores a short note for this channel, to recall in later conversations.",
      R"({"type":"object","properties":{"text":{"type":"string","minLength":1,"maxLength":1000}},)"
      R"("required":["text"],"additionalProperties":false})",
      [&redis](const rapidjson::Value& args, call_context& ctx) -> asio::awaitable<tool_output> {
        const auto key = notes_key(ctx.platform, ctx.channel_id);
        auto count = co_await redis.command("HLEN", key);
        if (!count) throw tool_error("notes are unavailable: " + count.error().message());
        if (count->to_integer().value_or(0) >= static_cast<long long>(max_notes))
          throw tool_error(fmt::format("this channel already has {} notes; forget some first", max_notes));
        const auto id = bus::random_hex_id().substr(0, 8);
        auto stored = co_await redis.command("HSET", key, id, json_string_arg(args, "text"));
        if (!stored) throw tool_error("the note was not stored: " + stored.error().message());
        co_return text_output("remembered as note " + id);
      }});
  r.add(tool{
      "recall_notes",
      "Lists this channel's notes (with their ids), optionally only those containing a word.",
      R"({"type":"object","properties":{"contains":{"type":"string","maxLength":200}},"additionalProperties":false})",
      [&redis](const rapidjson::Value& args, call_context& ctx) -> asio::awaitable<tool_output> {
        auto all = co_await redis.command("HGETALL", notes_key(ctx.platform, ctx.channel_id));
        if (!all) throw tool_error("notes are unavailable: " + all.error().message());
        const auto filter = json_string_arg(args, "contains");
        std::string text;
        const auto& items = all->elements();
        for (std::size_t i = 0; i + 1 < items.size(); i += 2)
          if (filter.empty() || items[i + 1].str().find(filter) != std::string::npos)
            text += fmt::format("[{}] {}\n", items[i].str(), items[i + 1].str());
        co_return text_output(text.empty() ? std::string("no notes") : text);
      }});
  r.add(tool{
      "forget_note",
      "Deletes one of this channel's notes by its id.",
      R"({"type":"object","properties":{"id":{"type":"string","minLength":1,"maxLength":32}},)"
      R"("required":["id"],"additionalProperties":false})",
      [&redis](const rapidjson::Value& args, call_context& ctx) -> asio::awaitable<tool_output> {
        const auto id = json_string_arg(args, "id");
        auto removed = co_await redis.command("HDEL", notes_key(ctx.platform, ctx.channel_id), id);
        if (!removed) throw tool_error("notes are unavailable: " + removed.error().message());
        if (removed->to_integer().value_or(0) == 0) throw tool_error("there is no note " + id);
        co_return text_output("forgot note " + id);
      }});

  r.add(tool{
      "create_file",
      "Creates a file and sends it to the channel: text (content as written), csv (rows: a list of rows, each a "
      "list of cells) or json (content must be valid JSON).",
      R"({"type":"object","properties":{"filename":{"type":"string","minLength":1,"maxLength":100},)"
      R"("format":{"type":"string","enum":["text","csv","json"]},"content":{"type":"string","maxLength":1000000},)"
      R"("rows":{"type":"array","maxItems":10000,"items":{"type":"array","maxItems":200,)"
      R"("items":{"type":["string","number","boolean","null"]}}}},"required":["filename","format"],"additionalProperties":false})",
      [](const rapidjson::Value& args, call_context&) -> asio::awaitable<tool_output> {
        auto filename = json_string_arg(args, "filename");
        for (auto& c : filename)
          if (c == '/' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = '_';
        const auto format = json_string_arg(args, "format");
        const auto content = json_string_arg(args, "content");
        bus::attachment file;
        if (format == "csv") {
          const auto rows = args.FindMember("rows");
          if (rows == args.MemberEnd()) throw tool_error("rows: required for csv");
          for (const auto& row : rows->value.GetArray()) {
            std::string line;
            for (const auto& cell : row.GetArray()) {
              std::string text = cell.IsString() ? std::string(cell.GetString(), cell.GetStringLength())
                                 : cell.IsNull() ? std::string()
                                                 : json::to_string(cell);
              if (text.find_first_of(",\"\r\n") != std::string::npos) {  // RFC 4180 quoting
                std::string quoted = "\"";
                for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
                text = quoted + "\"";
              }
              line += (line.empty() ? "" : ",") + text;
            }
            file.data += line + "\r\n";
          }
          file.mimetype = "text/csv";
        } else if (format == "json") {
          // Only checked, never walked: iterative, so deep nesting cannot exhaust the stack.
          rapidjson::Document doc;
          doc.Parse<rapidjson::kParseIterativeFlag>(content.c_str(), content.size());
          if (doc.HasParseError()) throw tool_error("content: not valid JSON");
          file.data = content;
          file.mimetype = "application/json";
        } else {
          file.data = content;
          file.mimetype = "text/plain; charset=utf-8";
        }
        const std::string extension = format == "text" ? ".txt" : "." + format;
        if (!filename.ends_with(extension)) filename += extension;
        file.filename = filename;
        const auto size = file.data.size();
        std::vector<bus::attachment> media;
        media.push_back(std::move(file));
        tool_output out{fmt::format("created {} ({} bytes); it is sent to the channel with the reply", filename, size),
                        std::move(media)};
        co_return out;
      }});

  r.add(tool{
      "read_channel_history",
      "Reads this channel's most recent messages (oldest first), with who wrote them and when.",
      R"({"type":"object","properties":{"limit":{"type":"integer","minimum":1,"maximum":50}},"additionalProperties":false})",
      [history](const rapidjson::Value& args, call_context& ctx) -> asio::awaitable<tool_output> {
        const auto limit = static_cast<std::size_t>(int_arg(args, "limit", 10));
        auto recent = co_await history(ctx.platform, ctx.channel_id, limit);
        if (!recent) throw tool_error("history is unavailable: " + recent.error().message());
        std::string text;
        for (auto it = recent->rbegin(); it != recent->rend(); ++it) {
          const std::time_t seconds = static_cast<std::time_t>(it->timestamp);
          std::tm utc{};
          gmtime_r(&seconds, &utc);
          char when[32];
          std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", &utc);
          text += fmt::format("[{} UTC] {}{}: {}\n", when, it->user_name.empty() ? it->user_id : it->user_name,
                              it->is_bot ? " (bot)" : "", it->text);
        }
        co_return text_output(text.empty() ? std::string("no messages yet") : text);
      }});

  r.add(tool{
      "channel_info",
      "Facts about this channel from the chat platform itself: the platform, the bot's name there, and whether "
      "the channel is still valid.",
      R"({"type":"object","properties":{},"additionalProperties":false})",
      [](const rapidjson::Value&, call_context& ctx) -> asio::awaitable<tool_output> {
        if (ctx.adapter == nullptr) throw tool_error("channel_info runs on the gateway only");
        const auto me = ctx.adapter->identity();
        const bool valid = co_await ctx.adapter->is_channel_valid(ctx.channel_id);
        co_return text_output(fmt::format("platform {}; channel {} ({}); the bot is {} ({})", ctx.adapter->name(),
                                          ctx.channel_id, valid ? "valid" : "not valid", me.display_name, me.user_id));
      },
      true});
}

}  // namespace stargazer::tools

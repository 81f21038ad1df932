#include "stargazer/platform/discord/gateway_protocol.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"

#include <fmt/format.h>
#include <zlib.h>

#include <array>
#include <charconv>
#include <cstring>

namespace stargazer::platform::discord {

// ---- intents ---------------------------------------------------------------------------

std::optional<std::uint32_t> parse_intents(std::string_view text, std::string* error) {
  const auto fail = [&](std::string why) -> std::optional<std::uint32_t> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos) {
    std::uint32_t bits = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), bits);
    if (ec != std::errc{} || ptr != text.data() + text.size()) return fail("a number of at most 32 bits");
    return bits;
  }
  static constexpr std::array<std::pair<std::string_view, std::uint32_t>, 6> names{{
      {"guilds", intent::guilds},
      {"guild_messages", intent::guild_messages},
      {"guild_message_reactions", intent::guild_message_reactions},
      {"direct_messages", intent::direct_messages},
      {"direct_message_reactions", intent::direct_message_reactions},
      {"message_content", intent::message_content},
  }};
  std::uint32_t bits = 0;
  while (!text.empty()) {
    const auto comma = text.find(',');
    auto name = text.substr(0, comma);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    bool known = false;
    for (const auto& [n, bit] : names)
      if (n == name) bits |= bit, known = true;
    if (!known) return fail(fmt::format("unknown intent '{}'", name));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  if (bits == 0) return fail("no intents given");
  return bits;
}

// ---- zlib-stream -----------------------------------------------------------------------

struct zlib_stream::impl {
  z_stream z{};
  bool ready = false;
  bool broken = false;
  std::size_t max_bytes;
  std::string pending;  // compressed bytes of the message in progress
  std::string out;
};

zlib_stream::zlib_stream(std::size_t max_message_bytes) : impl_(std::make_unique<impl>()) {
  impl_->max_bytes = max_message_bytes;
  impl_->ready = inflateInit(&impl_->z) == Z_OK;
}

zlib_stream::~zlib_stream() {
  if (impl_->ready) inflateEnd(&impl_->z);
}

std::variant<zlib_stream::incomplete, std::string, zlib_stream::failure> zlib_stream::feed(std::string_view frame) {
  auto& s = *impl_;
  if (!s.ready || s.broken) return failure{"the zlib stream is unusable after an earlier error"};
  if (s.pending.size() + frame.size() > s.max_bytes) {
    s.broken = true;
    return failure{fmt::format("a compressed message over {} bytes", s.max_bytes)};
  }
  s.pending.append(frame);
  static constexpr std::string_view suffix("\x00\x00\xff\xff", 4);
  if (s.pending.size() < 4 || std::string_view(s.pending).substr(s.pending.size() - 4) != suffix) return incomplete{};
  s.out.clear();
  s.z.next_in = reinterpret_cast<Bytef*>(s.pending.data());
  s.z.avail_in = static_cast<uInt>(s.pending.size());
  std::array<char, 16 * 1024> chunk{};
  do {  // until inflate leaves room in the output: then all input is consumed and flushed
    s.z.next_out = reinterpret_cast<Bytef*>(chunk.data());
    s.z.avail_out = static_cast<uInt>(chunk.size());
    const int rc = inflate(&s.z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      s.broken = true;
      if (rc == Z_STREAM_END) return failure{"the zlib stream ended"};
      return failure{fmt::format("invalid zlib data: {}", s.z.msg != nullptr ? s.z.msg : "inflate failed")};
    }
    s.out.append(chunk.data(), chunk.size() - s.z.avail_out);
    if (s.out.size() > s.max_bytes) {
      s.broken = true;
      return failure{fmt::format("a message inflating to over {} bytes", s.max_bytes)};
    }
    if (rc == Z_BUF_ERROR) break;  // no progress possible: nothing more buffered
  } while (s.z.avail_out == 0);
  s.pending.clear();
  return std::move(s.out);
}

// ---- payloads --------------------------------------------------------------------------

std::variant<payload, std::string> parse_payload(std::string_view text, std::size_t max_bytes) {
  if (text.size() > max_bytes) return fmt::format("a payload of {} bytes (limit {})", text.size(), max_bytes);
  // Dispatch payloads nest deeper than request bodies (messages with embeds and components).
  auto parsed = json::parse_object(text, 64);
  if (auto* error = std::get_if<std::string>(&parsed)) return *error;
  const auto& doc = std::get<rapidjson::Document>(parsed);
  payload p;
  const auto op = doc.FindMember("op");
  if (op == doc.MemberEnd() || !op->value.IsInt()) return std::string("no integer 'op'");
  p.op = op->value.GetInt();
  if (const auto s = doc.FindMember("s"); s != doc.MemberEnd() && s->value.IsInt64()) p.seq = s->value.GetInt64();
  if (const auto t = doc.FindMember("t"); t != doc.MemberEnd() && t->value.IsString())
    p.type.assign(t->value.GetString(), t->value.GetStringLength());
  const auto d = doc.FindMember("d");
  p.data_json = d == doc.MemberEnd() ? "null" : json::to_string(d->value);
  return p;
}

std::string heartbeat_command(std::optional<std::int64_t> seq) {
  return fmt::format(R"({{"op":1,"d":{}}})", seq ? std::to_string(*seq) : std::string("null"));
}

std::string identify_command(std::string_view token, std::uint32_t intents, int shard_id, int shard_count,
                             std::string_view presence_text) {
  std::string presence;
  if (!presence_text.empty())
    presence = fmt::format(R"(,"presence":{{"since":null,"activities":[{{"name":"Custom Status","type":4,"state":{}}}],"status":"online","afk":false}})",
                           json::quoted(presence_text));
  return fmt::format(
      R"({{"op":2,"d":{{"token":{},"intents":{},"properties":{{"os":"linux","browser":"stargazer","device":"stargazer"}},"shard":[{},{}]{}}}}})",
      json::quoted(token), intents, shard_id, shard_count, presence);
}

std::string resume_command(std::string_view token, std::string_view session_id, std::int64_t seq) {
  return fmt::format(R"({{"op":6,"d":{{"token":{},"session_id":{},"seq":{}}}}})", json::quoted(token),
                     json::quoted(session_id), seq);
}

std::string presence_command(std::string_view text, std::string_view emoji) {
  std::string activities = "[]";
  if (!text.empty()) {
    const std::string emoji_json = emoji.empty() ? std::string() : fmt::format(R"(,"emoji":{{"name":{}}})", json::quoted(emoji));
    activities = fmt::format(R"([{{"name":"Custom Status","type":4,"state":{}{}}}])", json::quoted(text), emoji_json);
  }
  return fmt::format(R"({{"op":3,"d":{{"since":null,"activities":{},"status":"online","afk":false}}}})", activities);
}

// ---- close codes -----------------------------------------------------------------------

close_action after_close(int code) {
  switch (code) {
    case 4004:  // authentication failed
    case 4010:  // invalid shard
    case 4011:  // sharding required
    case 4012:  // invalid API version
    case 4013:  // invalid intents
    case 4014:  // disallowed intents
      return close_action::fatal;
    case 4007:  // invalid seq
    case 4009:  // session timed out
      return close_action::reidentify;
    default: return close_action::resume;
  }
}

std::string describe_close(int code) {
  const char* what = "connection closed";
  switch (code) {
    case 4000: what = "unknown error"; break;
    case 4001: what = "unknown opcode sent"; break;
    case 4002: what = "a payload Discord could not decode was sent"; break;
    case 4003: what = "a payload was sent before identifying"; break;
    case 4004: what = "authentication failed: the bot token is wrong"; break;
    case 4005: what = "identified twice"; break;
    case 4007: what = "invalid sequence number on resume"; break;
    case 4008: what = "rate limited: too many gateway commands"; break;
    case 4009: what = "session timed out"; break;
    case 4010: what = "invalid shard: check --discord-shards"; break;
    case 4011: what = "sharding required: the bot is in too many guilds for one shard; set --discord-shards"; break;
    case 4012: what = "invalid gateway API version"; break;
    case 4013: what = "invalid intents: check --discord-intents"; break;
    case 4014:
      what = "disallowed intents: enable the privileged intents (message content) for the bot in the developer "
             "portal, or drop them from --discord-intents";
      break;
    default: break;
  }
  return fmt::format("{} ({})", what, code);
}

std::string gateway_connect_url(std::string_view base, bool zlib) {
  std::string url(base);
  if (const auto q = url.find('?'); q != std::string::npos) url.resize(q);
  // "wss://gateway.discord.gg" needs the root path; "ws://host/gateway" keeps its own.
  const auto scheme_end = url.find("://");
  if (url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3) == std::string::npos) url += '/';
  return url + "?v=10&encoding=json" + (zlib ? "&compress=zlib-stream" : "");
}

int shard_of(std::string_view guild_id, int shard_count) {
  if (guild_id.empty() || shard_count <= 1) return 0;
  std::uint64_t id = 0;
  const auto [ptr, ec] = std::from_chars(guild_id.data(), guild_id.data() + guild_id.size(), id);
  if (ec != std::errc{}) return 0;
  return static_cast<int>((id >> 22) % static_cast<std::uint64_t>(shard_count));
}

}  // namespace stargazer::platform::discord

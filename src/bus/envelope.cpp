#include "stargazer/bus/envelope.hpp"

#include "stargazer/core/strings.hpp"

#include <fmt/format.h>
#include <msgpack.hpp>

#include <algorithm>
#include <array>

namespace stargazer::bus {
namespace {

// ---- decoding helpers ------------------------------------------------------------------

struct field_error {
  decode_failure failure;
};

[[noreturn]] void fail(std::string code, std::string detail) { throw field_error{{std::move(code), std::move(detail)}}; }

// A decoded map's fields by name; values are msgpack objects owned by the zone.
class fields {
public:
  explicit fields(const msgpack::object& map) {
    for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
      const auto& kv = map.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) fail("decode_error", "map key is not a string");
      const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
      if (kv.val.type != msgpack::type::NIL) entries_.emplace_back(key, &kv.val);  // nil reads as absent
    }
  }

  const msgpack::object* find(std::string_view key) const {
    for (const auto& [k, v] : entries_)
      if (k == key) return v;
    return nullptr;
  }

  std::string str(std::string_view key, std::string fallback = {}) const {
    const auto* o = find(key);
    return o ? as_str(*o, key) : fallback;
  }
  std::string required_str(std::string_view key) const {
    const auto* o = find(key);
    if (o == nullptr) fail("missing_field", std::string(key));
    return as_str(*o, key);
  }
  std::optional<std::string> optional_str(std::string_view key) const {
    const auto* o = find(key);
    if (o == nullptr) return std::nullopt;
    return as_str(*o, key);
  }
  // Raw bytes: bin as is, str decoded from base64 (what text-only writers send).
  std::string bytes(std::string_view key) const;
  bool boolean(std::string_view key, bool fallback) const {
    const auto* o = find(key);
    if (o == nullptr) return fallback;
    if (o->type != msgpack::type::BOOLEAN) fail("bad_field_type", std::string(key) + " must be a bool");
    return o->via.boolean;
  }
  std::int64_t integer(std::string_view key, std::int64_t fallback) const {
    const auto* o = find(key);
    if (o == nullptr) return fallback;
    if (o->type == msgpack::type::POSITIVE_INTEGER) {
      if (o->via.u64 > static_cast<std::uint64_t>(INT64_MAX)) fail("bad_field_type", std::string(key) + " is too large");
      return static_cast<std::int64_t>(o->via.u64);
    }
    if (o->type == msgpack::type::NEGATIVE_INTEGER) return o->via.i64;
    fail("bad_field_type", std::string(key) + " must be an integer");
  }
  double number(std::string_view key, double fallback) const {
    const auto* o = find(key);
    if (o == nullptr) return fallback;
    if (o->type == msgpack::type::FLOAT32 || o->type == msgpack::type::FLOAT64) return o->via.f64;
    if (o->type == msgpack::type::POSITIVE_INTEGER) return static_cast<double>(o->via.u64);
    if (o->type == msgpack::type::NEGATIVE_INTEGER) return static_cast<double>(o->via.i64);
    fail("bad_field_type", std::string(key) + " must be a number");
  }
  std::vector<std::string> str_array(std::string_view key) const {
    std::vector<std::string> out;
    const auto* o = find(key);
    if (o == nullptr) return out;
    if (o->type != msgpack::type::ARRAY) fail("bad_field_type", std::string(key) + " must be an array");
    for (std::uint32_t i = 0; i < o->via.array.size; ++i) out.push_back(as_str(o->via.array.ptr[i], key));
    return out;
  }
  const msgpack::object* array(std::string_view key) const {
    const auto* o = find(key);
    if (o != nullptr && o->type != msgpack::type::ARRAY) fail("bad_field_type", std::string(key) + " must be an array");
    return o;
  }

  static std::string as_str(const msgpack::object& o, std::string_view key) {
    if (o.type == msgpack::type::STR) return {o.via.str.ptr, o.via.str.size};
    if (o.type == msgpack::type::BIN) return {o.via.bin.ptr, o.via.bin.size};
    fail("bad_field_type", std::string(key) + " must be a string");
  }

private:
  std::vector<std::pair<std::string_view, const msgpack::object*>> entries_;
};

std::string fields::bytes(std::string_view key) const {
  const auto* o = find(key);
  if (o == nullptr) return {};
  if (o->type == msgpack::type::BIN) return {o->via.bin.ptr, o->via.bin.size};
  if (o->type == msgpack::type::STR) {
    auto decoded = base64_decode({o->via.str.ptr, o->via.str.size});
    if (!decoded) fail("bad_field_type", std::string(key) + " is not valid base64");
    return *decoded;
  }
  fail("bad_field_type", std::string(key) + " must be bin or base64 str");
}

// Unpacks `bytes` into a map with limits, checks the version, returns its fields.
template <class Fn>
auto decode_map(std::string_view bytes, Fn&& build) -> decoded<decltype(build(std::declval<const fields&>()))> {
  const decode_limits limits;
  if (bytes.empty()) return decode_failure{"missing_data", "empty data field"};
  if (bytes.size() > limits.max_bytes) return decode_failure{"limit_exceeded", "data larger than 48 MiB"};
  try {
    std::size_t offset = 0;
    // The element limits are also capped by the input size, so a short input cannot
    // claim a huge array and make msgpack allocate for it.
    const auto cap = [&](std::size_t limit) { return std::min(limit, bytes.size()); };
    msgpack::object_handle handle = msgpack::unpack(
        bytes.data(), bytes.size(), offset, nullptr, nullptr,
        msgpack::unpack_limit(cap(limits.max_array), cap(limits.max_map), limits.max_str, limits.max_bin, 0,
                              limits.max_depth));
    if (offset != bytes.size()) return decode_failure{"decode_error", "trailing bytes after the envelope"};
    const auto& root = handle.get();
    if (root.type != msgpack::type::MAP) return decode_failure{"decode_error", "envelope is not a map"};
    const fields f(root);
    const auto version = f.integer("v", envelope_version);
    if (version != envelope_version)
      return decode_failure{"unsupported_version", fmt::format("v={} (this build reads v=1)", version)};
    return build(f);
  } catch (const field_error& e) {
    return e.failure;
  } catch (const msgpack::size_overflow& e) {  // includes depth_size_overflow
    return decode_failure{"limit_exceeded", e.what()};
  } catch (const std::exception& e) {
    return decode_failure{"decode_error", e.what()};
  }
}

// ---- encoding helpers ------------------------------------------------------------------

// Packs a map whose size is known only at the end: fields go into a body buffer.
class map_builder {
public:
  map_builder() : body_packer_(body_) {}

  map_builder& str(std::string_view key, std::string_view value) {
    key_(key);
    body_packer_.pack_str(static_cast<std::uint32_t>(value.size()));
    body_packer_.pack_str_body(value.data(), static_cast<std::uint32_t>(value.size()));
    return *this;
  }
  map_builder& str_if(std::string_view key, std::string_view value) { return value.empty() ? *this : str(key, value); }
  map_builder& bin(std::string_view key, std::string_view value) {
    key_(key);
    body_packer_.pack_bin(static_cast<std::uint32_t>(value.size()));
    body_packer_.pack_bin_body(value.data(), static_cast<std::uint32_t>(value.size()));
    return *this;
  }
  map_builder& integer(std::string_view key, std::int64_t value) {
    key_(key);
    body_packer_.pack(value);
    return *this;
  }
  map_builder& number(std::string_view key, double value) {
    key_(key);
    body_packer_.pack_double(value);
    return *this;
  }
  map_builder& boolean(std::string_view key, bool value) {
    key_(key);
    value ? body_packer_.pack_true() : body_packer_.pack_false();
    return *this;
  }
  template <class Fn>
  map_builder& custom(std::string_view key, Fn&& write_value) {
    key_(key);
    write_value(body_packer_);
    return *this;
  }

  std::string finish() {
    msgpack::sbuffer out;
    msgpack::packer<msgpack::sbuffer> p(out);
    p.pack_map(count_);
    out.write(body_.data(), body_.size());
    return {out.data(), out.size()};
  }

private:
  void key_(std::string_view key) {
    ++count_;
    body_packer_.pack_str(static_cast<std::uint32_t>(key.size()));
    body_packer_.pack_str_body(key.data(), static_cast<std::uint32_t>(key.size()));
  }

  msgpack::sbuffer body_;
  msgpack::packer<msgpack::sbuffer> body_packer_;
  std::uint32_t count_ = 0;
};

void pack_str(msgpack::packer<msgpack::sbuffer>& p, std::string_view s) {
  p.pack_str(static_cast<std::uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

void pack_str_array(msgpack::packer<msgpack::sbuffer>& p, const std::vector<std::string>& values) {
  p.pack_array(static_cast<std::uint32_t>(values.size()));
  for (const auto& v : values) pack_str(p, v);
}

constexpr std::array outbound_type_names{"message",  "file",     "buttons",     "typing",        "start_typing",
                                         "stop_typing", "reaction", "presence", "rpc_request", "turn_complete"};

}  // namespace

std::string_view to_string(outbound_type t) { return outbound_type_names[static_cast<std::size_t>(t)]; }

std::optional<outbound_type> outbound_type_from(std::string_view name) {
  for (std::size_t i = 0; i < outbound_type_names.size(); ++i)
    if (name == outbound_type_names[i]) return static_cast<outbound_type>(i);
  return std::nullopt;
}

namespace {

// Attachments and tool media share one shape: {data: bin, mimetype, filename, source_url}.
void pack_attachments(msgpack::packer<msgpack::sbuffer>& p, const std::vector<attachment>& list) {
  p.pack_array(static_cast<std::uint32_t>(list.size()));
  for (const auto& a : list) {
    p.pack_map(4);
    pack_str(p, "data");
    p.pack_bin(static_cast<std::uint32_t>(a.data.size()));
    p.pack_bin_body(a.data.data(), static_cast<std::uint32_t>(a.data.size()));
    pack_str(p, "mimetype");
    pack_str(p, a.mimetype);
    pack_str(p, "filename");
    pack_str(p, a.filename);
    pack_str(p, "source_url");
    pack_str(p, a.source_url);
  }
}

std::vector<attachment> unpack_attachments(const fields& f, std::string_view key) {
  std::vector<attachment> out;
  if (const auto* list = f.array(key)) {
    for (std::uint32_t i = 0; i < list->via.array.size; ++i) {
      const auto& item = list->via.array.ptr[i];
      if (item.type != msgpack::type::MAP) fail("bad_field_type", std::string(key) + " must hold maps");
      const fields a(item);
      out.push_back({a.bytes("data"), a.str("mimetype"), a.str("filename"), a.str("source_url")});
    }
  }
  return out;
}

}  // namespace

std::string encode(const inbound_envelope& e) {
  map_builder m;
  m.integer("v", envelope_version).str("type", "inbound").str("platform", e.platform).str("channel_id", e.channel_id);
  m.str("user_id", e.user_id).str("username", e.username).str("content", e.content);
  m.boolean("is_addressed", e.is_addressed);
  if (!e.attachments.empty()) m.custom("attachments", [&](auto& p) { pack_attachments(p, e.attachments); });
  m.str_if("room_name", e.room_name);
  if (e.timestamp != 0) m.number("timestamp", e.timestamp);
  m.str_if("message_id", e.message_id).str_if("reply_to", e.reply_to).str_if("reactions", e.reactions);
  if (e.unified_user_id) m.str("unified_user_id", *e.unified_user_id);
  if (!e.user_aliases.empty()) m.custom("user_aliases", [&](auto& p) { pack_str_array(p, e.user_aliases); });
  if (e.guild_id) m.str("guild_id", *e.guild_id);
  m.str_if("guild_name", e.guild_name);
  if (e.is_dm) m.boolean("is_dm", true);
  if (!e.member_roles.empty()) m.custom("member_roles", [&](auto& p) { pack_str_array(p, e.member_roles); });
  if (e.member_count != 0) m.integer("member_count", e.member_count);
  m.str_if("trace_id", e.trace_id).str_if("response_nonce", e.response_nonce);
  if (e.cached) m.boolean("cached", true);
  if (!e.extra.empty()) {
    m.custom("extra", [&](auto& p) {
      p.pack_map(static_cast<std::uint32_t>(e.extra.size()));
      for (const auto& [k, v] : e.extra) {
        pack_str(p, k);
        pack_str(p, v);
      }
    });
  }
  return m.finish();
}

decoded<inbound_envelope> decode_inbound(std::string_view bytes) {
  return decode_map(bytes, [](const fields& f) {
    if (const auto type = f.str("type", "inbound"); type != "inbound") fail("unknown_type", "inbound stream got type " + type);
    inbound_envelope e;
    e.platform = f.required_str("platform");
    e.channel_id = f.required_str("channel_id");
    if (e.platform.empty()) fail("missing_field", "platform is empty");
    if (e.channel_id.empty()) fail("missing_field", "channel_id is empty");
    e.user_id = f.str("user_id");
    e.username = f.str("username");
    e.content = f.str("content");
    e.is_addressed = f.boolean("is_addressed", true);
    e.attachments = unpack_attachments(f, "attachments");
    e.room_name = f.str("room_name");
    e.timestamp = f.number("timestamp", 0);
    e.message_id = f.str("message_id");
    e.reply_to = f.str("reply_to");
    e.reactions = f.str("reactions");
    e.unified_user_id = f.optional_str("unified_user_id");
    e.user_aliases = f.str_array("user_aliases");
    e.guild_id = f.optional_str("guild_id");
    e.guild_name = f.str("guild_name");
    e.is_dm = f.boolean("is_dm", false);
    e.member_roles = f.str_array("member_roles");
    e.member_count = f.integer("member_count", 0);
    e.trace_id = f.str("trace_id");
    e.response_nonce = f.str("response_nonce");
    e.cached = f.boolean("cached", false);
    if (const auto* extra = f.find("extra")) {
      if (extra->type != msgpack::type::MAP) fail("bad_field_type", "extra must be a map");
      const fields x(*extra);
      for (std::uint32_t i = 0; i < extra->via.map.size; ++i) {
        const auto& kv = extra->via.map.ptr[i];
        if (kv.val.type == msgpack::type::STR || kv.val.type == msgpack::type::BIN)
          e.extra.emplace(std::string(kv.key.via.str.ptr, kv.key.via.str.size), fields::as_str(kv.val, "extra"));
      }
    }
    return e;
  });
}

std::string encode(const outbound_envelope& e) {
  map_builder m;
  m.integer("v", envelope_version).str("type", to_string(e.type));
  m.str_if("channel_id", e.channel_id).str_if("message_key", e.message_key);
  m.str_if("trace_id", e.trace_id).str_if("response_nonce", e.response_nonce);
  if (e.completes_turn) m.boolean("completes_turn", true);
  switch (e.type) {
    case outbound_type::message: m.str("text", e.text); break;
    case outbound_type::file:
      m.bin("file_data", e.file_data).str("filename", e.filename).str("mimetype", e.mimetype);
      break;
    case outbound_type::buttons:
      m.str("text", e.text).custom("buttons", [&](auto& p) {
        p.pack_array(static_cast<std::uint32_t>(e.buttons.size()));
        for (const auto& b : e.buttons) {
          p.pack_map(3);
          pack_str(p, "label");
          pack_str(p, b.label);
          pack_str(p, "id");
          pack_str(p, b.id);
          pack_str(p, "url");
          pack_str(p, b.url);
        }
      });
      break;
    case outbound_type::reaction: m.str("message_id", e.message_id).str("emoji", e.emoji); break;
    case outbound_type::presence: m.str("text", e.text).str_if("emoji", e.emoji); break;
    case outbound_type::rpc_request:
      m.str("rpc_method", e.rpc_method).str("rpc_args", e.rpc_args_json).str("reply_key", e.reply_key);
      m.str_if("request_id", e.request_id);
      if (e.deadline != 0) m.number("deadline", e.deadline);
      break;
    case outbound_type::typing:
    case outbound_type::start_typing:
    case outbound_type::stop_typing:
    case outbound_type::turn_complete: break;
  }
  return m.finish();
}

decoded<outbound_envelope> decode_outbound(std::string_view bytes) {
  return decode_map(bytes, [](const fields& f) {
    outbound_envelope e;
    const auto type_name = f.str("type", "message");
    const auto type = outbound_type_from(type_name);
    if (!type) fail("unknown_type", "type '" + type_name + "'");
    e.type = *type;
    e.channel_id = f.str("channel_id");
    e.message_key = f.str("message_key");
    e.trace_id = f.str("trace_id");
    e.response_nonce = f.str("response_nonce");
    e.completes_turn = f.boolean("completes_turn", false);
    const bool needs_channel = e.type != outbound_type::presence && e.type != outbound_type::rpc_request;
    if (needs_channel && e.channel_id.empty()) fail("missing_field", "channel_id");
    switch (e.type) {
      case outbound_type::message: e.text = f.required_str("text"); break;
      case outbound_type::file:
        e.file_data = f.bytes("file_data");
        e.filename = f.str("filename", "file");
        e.mimetype = f.str("mimetype", "application/octet-stream");
        break;
      case outbound_type::buttons: {
        e.text = f.required_str("text");
        const auto* list = f.array("buttons");
        if (list == nullptr) fail("missing_field", "buttons");
        for (std::uint32_t i = 0; i < list->via.array.size; ++i) {
          const auto& item = list->via.array.ptr[i];
          if (item.type != msgpack::type::MAP) fail("bad_field_type", "buttons must hold maps");
          const fields b(item);
          e.buttons.push_back({b.required_str("label"), b.str("id"), b.str("url")});
        }
        break;
      }
      case outbound_type::reaction:
        e.message_id = f.required_str("message_id");
        e.emoji = f.required_str("emoji");
        break;
      case outbound_type::presence:
        e.text = f.str("text");
        e.emoji = f.str("emoji");
        break;
      case outbound_type::rpc_request:
        e.rpc_method = f.find("rpc_method") ? f.required_str("rpc_method") : f.required_str("action");
        e.rpc_args_json = f.str("rpc_args", "{}");
        e.reply_key = f.required_str("reply_key");
        e.request_id = f.str("request_id");
        e.deadline = f.number("deadline", 0);
        break;
      case outbound_type::turn_complete:
        if (e.response_nonce.empty()) fail("missing_field", "response_nonce");
        break;
      case outbound_type::typing:
      case outbound_type::start_typing:
      case outbound_type::stop_typing: break;
    }
    return e;
  });
}

std::string encode(const tool_request& r) {
  map_builder m;
  m.integer("v", envelope_version).str("type", "tool_request").str("request_id", r.request_id);
  m.str("reply_stream", r.reply_stream).str("tool_name", r.tool_name).str("tool_args", r.tool_args_json);
  if (!r.tool_ctx.empty()) {
    m.custom("tool_ctx", [&](auto& p) {
      p.pack_map(static_cast<std::uint32_t>(r.tool_ctx.size()));
      for (const auto& [k, v] : r.tool_ctx) {
        pack_str(p, k);
        pack_str(p, v);
      }
    });
  }
  m.number("deadline", r.deadline).str_if("trace_id", r.trace_id);
  return m.finish();
}

std::string encode(const tool_reply& r) {
  map_builder m;
  m.integer("v", envelope_version).str("type", "tool_reply").str("request_id", r.request_id).boolean("ok", r.ok);
  if (r.ok) m.str("result", r.result);
  else m.str("error", r.error);
  if (!r.media.empty()) m.custom("media", [&](auto& p) { pack_attachments(p, r.media); });
  m.str_if("trace_id", r.trace_id);
  return m.finish();
}

decoded<tool_request> decode_tool_request(std::string_view bytes) {
  return decode_map(bytes, [](const fields& f) {
    if (const auto type = f.str("type", "tool_request"); type != "tool_request")
      fail("unknown_type", "tools stream got type " + type);
    tool_request r;
    r.request_id = f.required_str("request_id");
    r.reply_stream = f.required_str("reply_stream");
    r.tool_name = f.required_str("tool_name");
    r.tool_args_json = f.str("tool_args", "{}");
    if (const auto* ctx = f.find("tool_ctx")) {
      if (ctx->type != msgpack::type::MAP) fail("bad_field_type", "tool_ctx must be a map");
      for (std::uint32_t i = 0; i < ctx->via.map.size; ++i) {
        const auto& kv = ctx->via.map.ptr[i];
        if (kv.key.type == msgpack::type::STR && kv.val.type == msgpack::type::STR)
          r.tool_ctx.emplace(fields::as_str(kv.key, "tool_ctx"), fields::as_str(kv.val, "tool_ctx"));
      }
    }
    r.deadline = f.number("deadline", 0);
    if (r.deadline <= 0) fail("missing_field", "deadline");
    r.trace_id = f.str("trace_id");
    return r;
  });
}

decoded<tool_reply> decode_tool_reply(std::string_view bytes) {
  return decode_map(bytes, [](const fields& f) {
    if (const auto type = f.str("type", "tool_reply"); type != "tool_reply")
      fail("unknown_type", "reply stream got type " + type);
    tool_reply r;
    r.request_id = f.required_str("request_id");
    r.ok = f.boolean("ok", false);
    r.result = f.str("result");
    r.error = f.str("error");
    r.media = unpack_attachments(f, "media");
    r.trace_id = f.str("trace_id");
    return r;
  });
}

}  // namespace stargazer::bus

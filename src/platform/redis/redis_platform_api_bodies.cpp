#include "stargazer/platform/redis/redis_platform_api_bodies.hpp"

#include "stargazer/core/json_value.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/json_body.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace stargazer::platform {

using http::response;

namespace {

bool valid_id(std::string_view s, std::size_t max, std::string_view extra = {}) {
  if (s.empty() || s.size() > max) return false;
  // "." and ".." are dot-segments: clients and proxies normalise them out of URLs, so such
  // an id could never be addressed (or would address another path).
  if (s == "." || s == "..") return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.' || extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

response bad(std::string_view code, std::string message) { return response::error(400, code, message); }

// Reads an optional string member, checking its type and length.
std::optional<response> read_string(const rapidjson::Value& obj, const char* name, std::size_t max, std::string& out,
                                    bool required) {
  if (!obj.HasMember(name) || obj[name].IsNull()) {
    if (required) return bad("missing_field", fmt::format("'{}' is required", name));
    return std::nullopt;
  }
  const auto& v = obj[name];
  if (!v.IsString()) return bad("bad_field_type", fmt::format("'{}' must be a string", name));
  if (v.GetStringLength() > max)
    return response::error(413, "field_too_long", fmt::format("'{}' is longer than {} bytes", name, max));
  out.assign(v.GetString(), v.GetStringLength());
  return std::nullopt;
}

// Reads an optional boolean member, checking its type.
std::optional<response> read_bool(const rapidjson::Value& obj, const char* name, bool& out) {
  if (!obj.HasMember(name) || obj[name].IsNull()) return std::nullopt;
  if (!obj[name].IsBool()) return bad("bad_field_type", fmt::format("'{}' must be true or false", name));
  out = obj[name].GetBool();
  return std::nullopt;
}

bool has_control_character(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; });
}

// `extra`: an object of at most max_extra_bytes as compact JSON. String values are kept
// as they are, other values (numbers, booleans, null, arrays, objects) as their JSON text.
std::optional<response> read_extra(const rapidjson::Value& body, const redis_platform_api_settings& s,
                                   std::map<std::string, std::string>& out) {
  if (!body.HasMember("extra") || body["extra"].IsNull()) return std::nullopt;
  const auto& extra = body["extra"];
  if (!extra.IsObject()) return bad("bad_field_type", "'extra' must be a JSON object");
  if (json::to_string(extra).size() > s.max_extra_bytes)
    return response::error(413, "field_too_long",
                           fmt::format("'extra' is longer than {} bytes as compact JSON", s.max_extra_bytes));
  for (const auto& kv : extra.GetObject()) {
    const std::string_view key(kv.name.GetString(), kv.name.GetStringLength());
    if (key.empty() || key.size() > s.max_extra_key_bytes || has_control_character(key))
      return bad("bad_extra_key",
                 fmt::format("'extra' keys are 1-{} bytes without control characters", s.max_extra_key_bytes));
    auto value = kv.value.IsString() ? std::string(kv.value.GetString(), kv.value.GetStringLength())
                                     : json::to_string(kv.value);
    out.emplace(std::string(key), std::move(value));
  }
  return std::nullopt;
}

std::optional<response> read_metadata(const rapidjson::Value& obj, const redis_platform_api_settings& s,
                                      std::map<std::string, std::string>& out) {
  if (!obj.HasMember("metadata") || obj["metadata"].IsNull()) return std::nullopt;
  const auto& m = obj["metadata"];
  if (!m.IsObject()) return bad("bad_field_type", "'metadata' must be an object of strings");
  if (m.MemberCount() > s.max_metadata_fields)
    return response::error(413, "too_many_fields", fmt::format("'metadata' has more than {} fields", s.max_metadata_fields));
  for (const auto& kv : m.GetObject()) {
    const std::string key(kv.name.GetString(), kv.name.GetStringLength());
    if (!valid_id(key, 64)) return bad("bad_metadata_key", "metadata keys are 1-64 characters of [A-Za-z0-9._-]");
    if (key == "display_name" || key == "created_at" || key == "api_key" || key == "api_key_sha256" ||
        key == "instance_id")
      return bad("reserved_metadata_key", "'" + key + "' is reserved");
    if (!kv.value.IsString()) return bad("bad_field_type", "metadata values must be strings");
    if (kv.value.GetStringLength() > s.max_metadata_value_bytes)
      return response::error(413, "field_too_long",
                             fmt::format("metadata values are at most {} bytes", s.max_metadata_value_bytes));
    out.emplace(key, std::string(kv.value.GetString(), kv.value.GetStringLength()));
  }
  return std::nullopt;
}

std::optional<response> read_attachments(const rapidjson::Value& body, const redis_platform_api_settings& s,
                                         std::vector<bus::attachment>& out) {
  if (!body.HasMember("attachments") || body["attachments"].IsNull()) return std::nullopt;
  const auto& list = body["attachments"];
  if (!list.IsArray()) return bad("bad_field_type", "'attachments' must be an array");
  if (list.Size() > s.max_attachments)
    return response::error(413, "too_many_attachments", fmt::format("at most {} attachments", s.max_attachments));
  for (const auto& a : list.GetArray()) {
    if (!a.IsObject()) return bad("bad_field_type", "each attachment must be an object");
    std::string data64, mimetype, filename;
    if (auto e = read_string(a, "data", s.max_attachment_bytes * 4 / 3 + 4, data64, true)) return e;
    if (auto e = read_string(a, "mimetype", 128, mimetype, false)) return e;
    if (auto e = read_string(a, "filename", 255, filename, false)) return e;
    if (filename.find_first_of(std::string_view("/\\\0\r\n", 5)) != std::string::npos)
      return bad("bad_filename", "filenames may not contain path separators or control characters");
    auto data = base64_decode(data64);
    if (!data) return bad("bad_attachment", "attachment 'data' is not valid base64");
    if (data->size() > s.max_attachment_bytes)
      return response::error(413, "attachment_too_large",
                             fmt::format("attachments are at most {} bytes", s.max_attachment_bytes));
    out.push_back({std::move(*data), mimetype.empty() ? "application/octet-stream" : mimetype, filename, ""});
  }
  return std::nullopt;
}

}  // namespace

std::optional<response> check_instance_id(std::string_view id) {
  if (!valid_id(id, 64)) return bad("bad_instance_id", "instance ids are 1-64 characters of [A-Za-z0-9._-]");
  return std::nullopt;
}

std::optional<response> check_user_id(std::string_view id) {
  if (!valid_id(id, 128, ":@")) return bad("bad_user_id", "user ids are 1-128 characters of [A-Za-z0-9._:@-]");
  return std::nullopt;
}

std::optional<response> check_message_id(std::string_view id) {
  if (!valid_id(id, 128, ":@"))
    return bad("bad_message_id", "'message_id' is 1-128 characters of [A-Za-z0-9._:@-]");
  return std::nullopt;
}

std::variant<account, response> path_account(std::string_view text) {
  if (auto a = parse_account(text)) return std::move(*a);
  return bad("bad_account",
             "accounts are 'platform:user_id': a platform of 1-32 characters of [a-z0-9_-], a user id of 1-256 bytes "
             "without spaces or control characters");
}

std::optional<response> check_unified_id(std::string_view id) {
  if (!valid_unified_id(id)) return bad("bad_unified_id", "unified ids are 1-64 characters of [A-Za-z0-9._-]");
  return std::nullopt;
}

std::variant<create_instance_body, response> parse_create_instance_body(const http::request& req,
                                                                        const redis_platform_api_settings& s) {
  auto parsed = http::parse_json_object(req);
  if (auto* err = std::get_if<response>(&parsed)) return std::move(*err);
  const auto& json = std::get<rapidjson::Document>(parsed);
  create_instance_body body;
  if (auto e = read_string(json, "instance_id", 64, body.instance_id, false)) return std::move(*e);
  if (!body.instance_id.empty())
    if (auto e = check_instance_id(body.instance_id)) return std::move(*e);
  if (auto e = read_string(json, "display_name", s.max_name_bytes, body.display_name, false)) return std::move(*e);
  if (auto e = read_metadata(json, s, body.metadata)) return std::move(*e);
  return body;
}

std::variant<update_instance_body, response> parse_update_instance_body(const http::request& req,
                                                                        const redis_platform_api_settings& s) {
  auto parsed = http::parse_json_object(req);
  if (auto* err = std::get_if<response>(&parsed)) return std::move(*err);
  const auto& json = std::get<rapidjson::Document>(parsed);
  update_instance_body body;
  if (auto e = read_string(json, "display_name", s.max_name_bytes, body.display_name, false)) return std::move(*e);
  if (auto e = read_metadata(json, s, body.metadata)) return std::move(*e);
  return body;
}

std::variant<register_user_body, response> parse_register_user_body(const http::request& req,
                                                                     const redis_platform_api_settings& s) {
  auto parsed = http::parse_json_object(req);
  if (auto* err = std::get_if<response>(&parsed)) return std::move(*err);
  const auto& json = std::get<rapidjson::Document>(parsed);
  register_user_body body;
  if (auto e = read_string(json, "user_id", 128, body.user_id, true)) return std::move(*e);
  if (auto e = check_user_id(body.user_id)) return std::move(*e);
  if (auto e = read_string(json, "display_name", s.max_name_bytes, body.display_name, true)) return std::move(*e);
  if (body.display_name.empty()) return bad("missing_field", "'display_name' must not be empty");
  if (auto e = read_metadata(json, s, body.metadata)) return std::move(*e);
  if (auto e = read_bool(json, "admin", body.admin)) return std::move(*e);
  return body;
}

std::variant<inject_request, response> parse_inject_body(const http::request& req,
                                                         const redis_platform_api_settings& s) {
  auto parsed = http::parse_json_object(req);
  if (auto* err = std::get_if<response>(&parsed)) return std::move(*err);
  const auto& json = std::get<rapidjson::Document>(parsed);
  inject_request in;
  if (auto e = read_string(json, "text", s.max_text_bytes, in.text, false)) return std::move(*e);
  if (auto e = read_string(json, "user_id", 128, in.user_id, true)) return std::move(*e);
  if (auto e = check_user_id(in.user_id)) return std::move(*e);
  if (auto e = read_string(json, "user_name", s.max_name_bytes, in.user_name, false)) return std::move(*e);
  if (auto e = read_string(json, "reply_to_id", 128, in.reply_to_id, false)) return std::move(*e);
  if (auto e = read_attachments(json, s, in.attachments)) return std::move(*e);
  if (in.text.empty() && in.attachments.empty()) return bad("empty_message", "'text' or 'attachments' is required");
  if (auto e = read_bool(json, "is_addressed", in.is_addressed)) return std::move(*e);
  if (auto e = read_string(json, "channel_name", s.max_name_bytes, in.channel_name, false)) return std::move(*e);
  if (auto e = read_string(json, "message_id", 128, in.message_id, false)) return std::move(*e);
  if (json.HasMember("message_id") && !json["message_id"].IsNull())
    if (auto e = check_message_id(in.message_id)) return std::move(*e);
  if (auto e = read_extra(json, s, in.extra)) return std::move(*e);
  if (auto e = read_string(json, "reactions", s.max_reactions_bytes, in.reactions, false)) return std::move(*e);
  return in;
}

std::variant<link_identity_body, response> parse_link_identity_body(const http::request& req,
                                                                    const identity_limits& limits) {
  auto parsed = http::parse_json_object(req);
  if (auto* err = std::get_if<response>(&parsed)) return std::move(*err);
  const auto& json = std::get<rapidjson::Document>(parsed);
  link_identity_body body;
  if (!json.HasMember("accounts") || json["accounts"].IsNull()) return bad("missing_field", "'accounts' is required");
  const auto& list = json["accounts"];
  if (!list.IsArray()) return bad("bad_field_type", "'accounts' must be an array of 'platform:user_id' strings");
  if (list.Empty()) return bad("missing_field", "'accounts' must name at least one account");
  if (list.Size() > limits.max_accounts_per_link)
    return response::error(413, "too_many_accounts",
                           fmt::format("'accounts' names at most {} accounts", limits.max_accounts_per_link));
  for (const auto& a : list.GetArray()) {
    if (!a.IsString()) return bad("bad_field_type", "'accounts' must be an array of 'platform:user_id' strings");
    auto who = path_account(std::string_view(a.GetString(), a.GetStringLength()));
    if (auto* err = std::get_if<response>(&who)) return std::move(*err);
    body.accounts.push_back(std::get<account>(std::move(who)));
  }
  if (auto e = read_string(json, "unified_id", 64, body.unified_id, false)) return std::move(*e);
  if (!body.unified_id.empty())
    if (auto e = check_unified_id(body.unified_id)) return std::move(*e);
  if (auto e = read_bool(json, "merge", body.merge)) return std::move(*e);
  return body;
}

}  // namespace stargazer::platform

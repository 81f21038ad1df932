#include "stargazer/platform/redis/redis_platform_api_bodies.hpp"

#include "stargazer/core/strings.hpp"
#include "stargazer/http/json_body.hpp"

#include <fmt/format.h>

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
  return in;
}

}  // namespace stargazer::platform

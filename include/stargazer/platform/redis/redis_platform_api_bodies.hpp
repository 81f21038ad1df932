#pragma once
// The request bodies of the Redis platform's REST API (docs/openapi.json), parsed and
// validated without I/O: the handlers call these, unit tests and the fuzz targets feed
// them bytes. Each returns the body's values or the 4xx response to send instead.

#include "stargazer/http/message.hpp"
#include "stargazer/platform/identity.hpp"
#include "stargazer/platform/redis/redis_platform_api.hpp"

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::platform {

// POST /instances: optional instance_id (checked when given), display_name, metadata.
struct create_instance_body {
  std::string instance_id;  // empty: generated
  std::string display_name;
  std::map<std::string, std::string> metadata;
};

// PATCH /instances/{id}: optional display_name and metadata.
struct update_instance_body {
  std::string display_name;  // empty: unchanged
  std::map<std::string, std::string> metadata;
};

// POST /instances/{id}/users: user_id and a non-empty display_name, optional metadata and
// admin flag.
struct register_user_body {
  std::string user_id;
  std::string display_name;
  std::map<std::string, std::string> metadata;
  bool admin = false;
};

// POST /identities: the accounts to link, optional unified_id and merge.
struct link_identity_body {
  std::vector<account> accounts;
  std::string unified_id;
  bool merge = false;
};

std::variant<create_instance_body, http::response> parse_create_instance_body(
    const http::request& req, const redis_platform_api_settings& s);
std::variant<update_instance_body, http::response> parse_update_instance_body(
    const http::request& req, const redis_platform_api_settings& s);
std::variant<register_user_body, http::response> parse_register_user_body(const http::request& req,
                                                                          const redis_platform_api_settings& s);
// POST /instances/{id}/messages: text, user_id, user_name, reply_to_id, attachments
// (base64, decoded here), is_addressed, channel_name, message_id, extra, reactions; text or
// attachments required. response_nonce is left empty.
std::variant<inject_request, http::response> parse_inject_body(const http::request& req,
                                                               const redis_platform_api_settings& s);
std::variant<link_identity_body, http::response> parse_link_identity_body(const http::request& req,
                                                                          const identity_limits& limits);

// 400 unless `id` is 1-64 characters of [A-Za-z0-9._-] and not "." or "..".
std::optional<http::response> check_instance_id(std::string_view id);
// 400 unless `id` is 1-128 characters of [A-Za-z0-9._:@-] and not "." or "..".
std::optional<http::response> check_user_id(std::string_view id);
// 400 unless `id` is a message id: as a user id.
std::optional<http::response> check_message_id(std::string_view id);
// The account of a path ("platform:user_id"), or the 400 to send.
std::variant<account, http::response> path_account(std::string_view text);
// 400 unless `id` is a unified id (identity.hpp).
std::optional<http::response> check_unified_id(std::string_view id);

}  // namespace stargazer::platform

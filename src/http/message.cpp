#include "stargazer/http/message.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/strings.hpp"

namespace stargazer::http {

std::string_view to_string(method m) {
  switch (m) {
    case method::get: return "GET";
    case method::head: return "HEAD";
    case method::post: return "POST";
    case method::put: return "PUT";
    case method::patch: return "PATCH";
    case method::delete_: return "DELETE";
    case method::options: return "OPTIONS";
    case method::other: return "OTHER";
  }
  return "OTHER";
}

method method_from(std::string_view name) {
  if (name == "GET") return method::get;
  if (name == "HEAD") return method::head;
  if (name == "POST") return method::post;
  if (name == "PUT") return method::put;
  if (name == "PATCH") return method::patch;
  if (name == "DELETE") return method::delete_;
  if (name == "OPTIONS") return method::options;
  return method::other;
}

namespace {

std::optional<std::string_view> find_header(const std::vector<std::pair<std::string, std::string>>& headers,
                                            std::string_view name) {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

}  // namespace

std::optional<std::string_view> request::header(std::string_view name) const { return find_header(headers, name); }

std::optional<std::string_view> response::header(std::string_view name) const { return find_header(headers, name); }

std::string_view request::bearer_token() const {
  const auto h = header("authorization");
  if (!h) return {};
  std::string_view v = *h;
  if (v.size() < 7 || !iequals(v.substr(0, 7), "bearer ")) return {};
  v.remove_prefix(7);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

std::optional<std::string_view> request::cookie(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key != "cookie") continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      const auto semicolon = rest.find(';');
      auto pair = rest.substr(0, semicolon);
      rest = semicolon == std::string_view::npos ? std::string_view{} : rest.substr(semicolon + 1);
      while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) pair.remove_prefix(1);
      const auto eq = pair.find('=');
      if (eq == std::string_view::npos || pair.substr(0, eq) != name) continue;
      auto v = pair.substr(eq + 1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
  }
  return std::nullopt;
}

std::optional<std::string> request::query_param(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    const auto eq = pair.find('=');
    const auto key = percent_decode(pair.substr(0, eq), true);
    if (!key || *key != name) continue;
    if (eq == std::string_view::npos) return std::string{};
    return percent_decode(pair.substr(eq + 1), true);
  }
  return std::nullopt;
}

std::string_view request::path_param(std::string_view name) const {
  const auto it = path_params.find(name);
  return it == path_params.end() ? std::string_view{} : std::string_view(it->second);
}

response response::json(unsigned status, std::string body) {
  response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

response response::text(unsigned status, std::string body, std::string content_type) {
  response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

response response::error(unsigned status, std::string_view code, std::string_view message) {
  std::string body = "{\"error\":{\"code\":";
  json::append_quoted(body, code);
  body += ",\"message\":";
  json::append_quoted(body, message);
  body += "}}";
  return json(status, std::move(body));
}

}  // namespace stargazer::http

#include "stargazer/http/router.hpp"

#include "stargazer/core/log.hpp"
#include "stargazer/core/strings.hpp"

#include <boost/asio/use_awaitable.hpp>

namespace stargazer::http {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.starts_with('/')) path.remove_prefix(1);
  while (true) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_capture(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

const log::logger& router_log() {
  static const log::logger instance("http");
  return instance;
}

}  // namespace

void router::add(method verb, std::string pattern, handler h) {
  std::vector<std::string> segments;
  for (auto s : split_path(pattern)) segments.emplace_back(s);
  routes_.push_back(entry{verb, std::move(pattern), std::move(segments), std::move(h)});
}

void router::add(method verb, std::string pattern, sync_handler h) {
  add(verb, std::move(pattern),
      handler([h = std::move(h)](request& req) -> boost::asio::awaitable<response> { co_return h(req); }));
}

router::decision router::route(request& req) const {
  const auto parts = split_path(req.path);
  std::string allow;
  for (const auto& r : routes_) {
    if (r.segments.size() != parts.size()) continue;
    std::map<std::string, std::string, std::less<>> params;
    bool matched = true;
    for (std::size_t i = 0; i < parts.size() && matched; ++i) {
      const auto& seg = r.segments[i];
      if (is_capture(seg)) {
        auto decoded = percent_decode(parts[i]);
        if (!decoded) return {nullptr, response::error(400, "bad_path", "malformed percent-encoding in the path")};
        if (decoded->empty()) matched = false;
        else params.emplace(seg.substr(1, seg.size() - 2), std::move(*decoded));
      } else if (seg != parts[i]) {
        matched = false;
      }
    }
    if (!matched) continue;
    const bool method_ok = r.verb == req.verb || (req.verb == method::head && r.verb == method::get);
    if (method_ok) {
      req.path_params = std::move(params);
      req.route = r.pattern;
      return {&r.h, std::nullopt};
    }
    const auto name = to_string(r.verb);
    if (allow.find(name) == std::string::npos) {
      if (!allow.empty()) allow += ", ";
      allow += name;
      if (r.verb == method::get) allow += ", HEAD";
    }
  }
  if (allow.empty()) return {nullptr, response::error(404, "not_found", "no route for " + req.path)};
  auto r = response::error(405, "method_not_allowed",
                           std::string(to_string(req.verb)) + " is not allowed here; allowed: " + allow);
  r.headers.emplace_back("Allow", allow);
  return {nullptr, std::move(r)};
}

std::vector<std::pair<method, std::string>> router::routes() const {
  std::vector<std::pair<method, std::string>> out;
  out.reserve(routes_.size());
  for (const auto& r : routes_) out.emplace_back(r.verb, r.pattern);
  return out;
}

boost::asio::awaitable<response> router::dispatch(request& req) const {
  auto d = route(req);
  if (d.target == nullptr) co_return std::move(*d.immediate);
  try {
    co_return co_await (*d.target)(req);
  } catch (const std::exception& e) {
    router_log().error("handler for {} {} threw: {}", to_string(req.verb), req.path, e.what());
  }
  co_return response::error(500, "internal", "internal server error");
}

}  // namespace stargazer::http

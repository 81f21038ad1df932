#include "stargazer/platform/matrix/client_api.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/platform/matrix/sync_events.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace stargazer::platform::matrix {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace {

constexpr std::string_view client_v3 = "/_matrix/client/v3";

std::string seg(std::string_view s) { return percent_encode(s); }

// A short, printable excerpt of a body that is not a Matrix error.
std::string excerpt(std::string_view body) {
  std::string out(utf8_prefix(body, 200));
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  if (out.size() < body.size()) out += "...";
  return out;
}

api_error malformed(const http::response& r, std::string_view what) {
  return api_error{r.status, "", fmt::format("malformed response: {}", what), std::nullopt};
}

api_error from_response(const http::response& r) {
  api_error e;
  e.status = r.status;
  auto parsed = json::parse_object(r.body);
  if (auto* doc = std::get_if<rapidjson::Document>(&parsed)) {
    e.errcode = json::string_member(*doc, "errcode");
    e.message = json::string_member(*doc, "error");
    if (doc->HasMember("retry_after_ms") && (*doc)["retry_after_ms"].IsNumber()) {
      const double ms = (*doc)["retry_after_ms"].GetDouble();
      if (ms >= 0 && ms < 1e10) e.retry_after = milliseconds(static_cast<long long>(ms));
    }
  }
  if (e.errcode.empty()) e.message = r.body.empty() ? std::string("(empty body)") : excerpt(r.body);
  if (!e.retry_after && r.status == 429) {
    if (const auto h = r.header("retry-after")) e.retry_after = http::parse_retry_after(*h, std::chrono::system_clock::now());
  }
  return e;
}

api_error from_transport(std::error_code ec) {
  return api_error{0, "", http::is_timeout(ec) ? std::string("timeout") : ec.message(), std::nullopt};
}

// A string member that must be there, or a malformed-response error.
std::variant<std::string, api_error> required_string(const http::response& r, const rapidjson::Value& obj,
                                                     const char* name) {
  if (!obj.HasMember(name) || !obj[name].IsString() || obj[name].GetStringLength() == 0)
    return malformed(r, fmt::format("no \"{}\" string", name));
  return std::string(obj[name].GetString(), obj[name].GetStringLength());
}

}  // namespace

std::string api_error::to_string() const {
  if (status == 0) return "transport: " + message;
  if (errcode.empty()) return fmt::format("{}: {}", status, message);
  return fmt::format("{} {}: {}", status, errcode, message);
}

bool is_auth_failure(const api_error& e) {
  return e.status == 401 && (e.errcode == "M_UNKNOWN_TOKEN" || e.errcode == "M_MISSING_TOKEN");
}

bool is_rate_limited(const api_error& e) { return e.status == 429; }

bool is_transport_error(const api_error& e) { return e.status == 0; }

struct client_api::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, const std::string& url, client_api_settings s)
      : ex(std::move(e)), settings(std::move(s)), log("matrix:api") {
    std::string error;
    auto parsed = http::parse_base_url(url, &error);
    if (!parsed) throw std::invalid_argument("homeserver URL: " + error);
    origin = *parsed;
    client = std::make_unique<http::client>(ex, origin, client_settings(settings.response_timeout));
  }

  asio::any_io_executor ex;
  client_api_settings settings;
  log::logger log;
  http::base_url origin;
  std::unique_ptr<http::client> client;
  // /sync has its own client: its response deadline follows the long poll's timeout.
  std::shared_ptr<http::client> sync_client;
  milliseconds sync_deadline{0};
  std::string token;

  http::client_settings client_settings(milliseconds response_timeout) const {
    http::client_settings cs;
    cs.connect_timeout = settings.connect_timeout;
    cs.response_timeout = response_timeout;
    cs.max_response_bytes = settings.max_response_bytes;
    cs.user_agent = settings.user_agent;
    cs.tls_verify = settings.tls_verify;
    cs.tls_ca_file = settings.tls_ca_file;
    return cs;
  }

  http::request make(http::method verb, std::string target, std::string body = {},
                     std::string content_type = "application/json", bool auth = true) const {
    http::request req;
    req.verb = verb;
    req.target = std::move(target);
    if (auth && !token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
    if (verb == http::method::post || verb == http::method::put) {
      if (body.empty() && content_type == "application/json") body = "{}";
      req.headers.emplace_back("Content-Type", std::move(content_type));
    }
    req.headers.emplace_back("Accept", "application/json");
    req.body = std::move(body);
    return req;
  }

  // One exchange on `c`: the 2xx response, or the error.
  asio::awaitable<std::variant<http::response, api_error>> exchange(http::client& c, http::request req) {
    const auto verb = req.verb;
    const auto path = req.target.substr(0, req.target.find('?'));
    auto r = co_await c.send(std::move(req));
    if (!r) {
      auto e = from_transport(r.error());
      log.debug("{} {}: {}", http::to_string(verb), path, e.to_string());
      co_return e;
    }
    if (r->status < 200 || r->status >= 300) {
      auto e = from_response(*r);
      log.debug("{} {}: {}", http::to_string(verb), path, e.to_string());
      co_return e;
    }
    co_return std::move(*r);
  }

  asio::awaitable<std::variant<http::response, api_error>> exchange(http::request req) {
    co_return co_await exchange(*client, std::move(req));
  }

  // A 2xx JSON object body → `pick(doc)`, or the error.
  template <class T, class F>
  static api_result<T> json_answer(std::variant<http::response, api_error>&& r, F&& pick) {
    if (auto* e = std::get_if<api_error>(&r)) return std::move(*e);
    auto& res = std::get<http::response>(r);
    auto parsed = json::parse_object(res.body);
    if (auto* why = std::get_if<std::string>(&parsed)) return malformed(res, *why);
    return pick(res, std::get<rapidjson::Document>(parsed));
  }

  static api_result<api_void> void_answer(std::variant<http::response, api_error>&& r) {
    if (auto* e = std::get_if<api_error>(&r)) return std::move(*e);
    return api_void{};
  }

  static api_result<std::string> body_answer(std::variant<http::response, api_error>&& r) {
    if (auto* e = std::get_if<api_error>(&r)) return std::move(*e);
    return std::move(std::get<http::response>(r).body);
  }

  static api_result<std::string> string_answer(std::variant<http::response, api_error>&& r, const char* name) {
    return json_answer<std::string>(std::move(r), [name](const http::response& res, const rapidjson::Document& doc)
                                                      -> api_result<std::string> {
      auto s = required_string(res, doc, name);
      if (auto* e = std::get_if<api_error>(&s)) return std::move(*e);
      return std::move(std::get<std::string>(s));
    });
  }

  asio::awaitable<api_result<login_result>> login_password(std::string user, std::string password,
                                                           std::string device_id) {
    std::string body = R"({"type":"m.login.password","identifier":{"type":"m.id.user","user":)" +
                       json::quoted(user) + "},\"password\":" + json::quoted(password);
    if (!device_id.empty()) body += ",\"device_id\":" + json::quoted(device_id);
    body += "}";
    auto r = co_await exchange(make(http::method::post, std::string(client_v3) + "/login", std::move(body),
                                    "application/json", false));
    auto out = json_answer<login_result>(std::move(r), [](const http::response& res, const rapidjson::Document& doc)
                                                           -> api_result<login_result> {
      login_result l;
      for (auto [name, field] : {std::pair{"access_token", &l.access_token}, std::pair{"device_id", &l.device_id},
                                 std::pair{"user_id", &l.user_id}}) {
        auto s = required_string(res, doc, name);
        if (auto* e = std::get_if<api_error>(&s)) return std::move(*e);
        *field = std::move(std::get<std::string>(s));
      }
      return l;
    });
    if (ok(out)) token = std::get<login_result>(out).access_token;
    co_return out;
  }

  asio::awaitable<api_result<whoami_result>> whoami() {
    auto r = co_await exchange(make(http::method::get, std::string(client_v3) + "/account/whoami"));
    co_return json_answer<whoami_result>(std::move(r), [](const http::response& res, const rapidjson::Document& doc)
                                                           -> api_result<whoami_result> {
      auto user = required_string(res, doc, "user_id");
      if (auto* e = std::get_if<api_error>(&user)) return std::move(*e);
      return whoami_result{std::move(std::get<std::string>(user)), json::string_member(doc, "device_id")};
    });
  }

  asio::awaitable<api_result<std::string>> upload_filter(std::string user_id, std::string filter_json) {
    auto r = co_await exchange(make(http::method::post,
                                    fmt::format("{}/user/{}/filter", client_v3, seg(user_id)), std::move(filter_json)));
    co_return string_answer(std::move(r), "filter_id");
  }

  asio::awaitable<api_result<std::string>> sync(std::string since, std::string filter_id, milliseconds timeout,
                                                bool full_state) {
    if (timeout.count() < 0) timeout = milliseconds(0);
    const auto deadline = timeout + settings.sync_grace;
    if (!sync_client || sync_deadline != deadline) {
      // A call still in flight on the old client keeps it alive until it ends.
      sync_client = std::make_shared<http::client>(ex, origin, client_settings(deadline));
      sync_deadline = deadline;
    }
    auto c = sync_client;
    std::string target = fmt::format("{}/sync?timeout={}", client_v3, timeout.count());
    if (!since.empty()) target += "&since=" + seg(since);
    if (!filter_id.empty()) target += "&filter=" + seg(filter_id);
    if (full_state) target += "&full_state=true";
    auto r = co_await exchange(*c, make(http::method::get, std::move(target)));
    co_return body_answer(std::move(r));
  }

  asio::awaitable<api_result<std::string>> send_event(std::string room_id, std::string event_type, std::string txn_id,
                                                      std::string content_json) {
    auto self = shared_from_this();
    const auto target =
        fmt::format("{}/rooms/{}/send/{}/{}", client_v3, seg(room_id), seg(event_type), seg(txn_id));
    asio::steady_timer timer(ex);
    for (int attempt = 0;; ++attempt) {
      auto r = co_await exchange(make(http::method::put, target, content_json));
      if (auto* e = std::get_if<api_error>(&r); e && is_rate_limited(*e) && attempt < settings.send_429_retries) {
        const auto wait = std::clamp(e->retry_after.value_or(settings.default_retry_wait), milliseconds(0),
                                     settings.max_retry_wait);
        log.warn("429 on send to {} (txn {}): waiting {} ms, retry {} of {}", room_id, txn_id, wait.count(),
                 attempt + 1, settings.send_429_retries);
        timer.expires_after(wait);
        boost::system::error_code ec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      co_return string_answer(std::move(r), "event_id");
    }
  }

  asio::awaitable<api_result<api_void>> set_typing(std::string room_id, std::string user_id, bool typing,
                                                   milliseconds timeout) {
    std::string body = typing ? fmt::format(R"({{"typing":true,"timeout":{}}})", std::max<long long>(0, timeout.count()))
                              : std::string(R"({"typing":false})");
    auto r = co_await exchange(make(http::method::put,
                                    fmt::format("{}/rooms/{}/typing/{}", client_v3, seg(room_id), seg(user_id)),
                                    std::move(body)));
    co_return void_answer(std::move(r));
  }

  asio::awaitable<api_result<api_void>> send_receipt(std::string room_id, std::string event_id) {
    auto r = co_await exchange(make(
        http::method::post, fmt::format("{}/rooms/{}/receipt/m.read/{}", client_v3, seg(room_id), seg(event_id))));
    co_return void_answer(std::move(r));
  }

  asio::awaitable<api_result<api_void>> set_presence(std::string user_id, std::string status_msg,
                                                     std::string presence) {
    std::string body = "{\"presence\":" + json::quoted(presence);
    if (!status_msg.empty()) body += ",\"status_msg\":" + json::quoted(status_msg);
    body += "}";
    auto r = co_await exchange(
        make(http::method::put, fmt::format("{}/presence/{}/status", client_v3, seg(user_id)), std::move(body)));
    co_return void_answer(std::move(r));
  }

  asio::awaitable<api_result<std::string>> join(std::string room) {
    auto r = co_await exchange(make(http::method::post, fmt::format("{}/join/{}", client_v3, seg(room))));
    co_return string_answer(std::move(r), "room_id");
  }

  asio::awaitable<api_result<api_void>> leave(std::string room_id) {
    auto r = co_await exchange(make(http::method::post, fmt::format("{}/rooms/{}/leave", client_v3, seg(room_id))));
    co_return void_answer(std::move(r));
  }

  asio::awaitable<api_result<std::map<std::string, std::string>>> joined_members(std::string room_id) {
    auto r = co_await exchange(
        make(http::method::get, fmt::format("{}/rooms/{}/joined_members", client_v3, seg(room_id))));
    using members = std::map<std::string, std::string>;
    co_return json_answer<members>(std::move(r), [](const http::response& res, const rapidjson::Document& doc)
                                                     -> api_result<members> {
      if (!doc.HasMember("joined") || !doc["joined"].IsObject()) return malformed(res, "no \"joined\" object");
      members out;
      for (const auto& m : doc["joined"].GetObject()) {
        std::string name;
        if (m.value.IsObject()) name = json::string_member(m.value, "display_name");
        out.emplace(std::string(m.name.GetString(), m.name.GetStringLength()), std::move(name));
      }
      return out;
    });
  }

  asio::awaitable<api_result<std::string>> room_state(std::string room_id, std::string type, std::string key) {
    auto r = co_await exchange(make(
        http::method::get, fmt::format("{}/rooms/{}/state/{}/{}", client_v3, seg(room_id), seg(type), seg(key))));
    co_return json_answer<std::string>(std::move(r), [](const http::response&, const rapidjson::Document& doc)
                                                         -> api_result<std::string> { return json::to_string(doc); });
  }

  asio::awaitable<api_result<std::string>> messages(std::string room_id, std::string from, std::string dir, int limit,
                                                    std::string filter_json) {
    std::string target = fmt::format("{}/rooms/{}/messages?dir={}&limit={}", client_v3, seg(room_id), seg(dir),
                                     std::max(1, limit));
    if (!from.empty()) target += "&from=" + seg(from);
    if (!filter_json.empty()) target += "&filter=" + seg(filter_json);
    auto r = co_await exchange(make(http::method::get, std::move(target)));
    if (auto* e = std::get_if<api_error>(&r)) co_return std::move(*e);
    auto& res = std::get<http::response>(r);
    auto parsed = json::parse_object(res.body);
    if (auto* why = std::get_if<std::string>(&parsed)) co_return malformed(res, *why);
    const auto& doc = std::get<rapidjson::Document>(parsed);
    if (!doc.HasMember("chunk") || !doc["chunk"].IsArray()) co_return malformed(res, "no \"chunk\" array");
    co_return std::move(res.body);
  }

  asio::awaitable<api_result<std::string>> upload(std::string data, std::string filename, std::string content_type) {
    std::string target = "/_matrix/media/v3/upload";
    if (!filename.empty()) target += "?filename=" + seg(filename);
    if (content_type.empty()) content_type = "application/octet-stream";
    auto r = co_await exchange(make(http::method::post, std::move(target), std::move(data), std::move(content_type)));
    co_return string_answer(std::move(r), "content_uri");
  }

  asio::awaitable<api_result<downloaded_media>> download(std::string mxc, std::size_t max_bytes) {
    const auto uri = parse_mxc(mxc);
    if (!uri) co_return api_error{0, "", "not an mxc URI: " + excerpt(mxc), std::nullopt};
    auto r = co_await exchange(make(http::method::get, fmt::format("/_matrix/client/v1/media/download/{}/{}",
                                                                   seg(uri->server_name), seg(uri->media_id))));
    if (auto* e = std::get_if<api_error>(&r)) {
      if (e->status == 0 && e->message == std::error_code(errc::reply_too_large).message())
        e->message = fmt::format("media larger than {} bytes", settings.max_response_bytes);
      co_return std::move(*e);
    }
    auto& res = std::get<http::response>(r);
    if (res.body.size() > max_bytes)
      co_return api_error{0, "", fmt::format("media larger than {} bytes", max_bytes), std::nullopt};
    co_return downloaded_media{std::move(res.body), res.content_type};
  }
};

client_api::client_api(asio::any_io_executor ex, const std::string& homeserver_url, client_api_settings settings)
    : impl_(std::make_shared<impl>(std::move(ex), homeserver_url, std::move(settings))) {}

client_api::~client_api() = default;

void client_api::set_access_token(std::string token) { impl_->token = std::move(token); }
const std::string& client_api::access_token() const { return impl_->token; }
const client_api_settings& client_api::settings() const { return impl_->settings; }

// Each call keeps the state alive for its whole run (the object may go first).
asio::awaitable<api_result<login_result>> client_api::login_password(std::string user, std::string password,
                                                                     std::string device_id) {
  auto keep = impl_;
  co_return co_await keep->login_password(std::move(user), std::move(password), std::move(device_id));
}

asio::awaitable<api_result<whoami_result>> client_api::whoami() {
  auto keep = impl_;
  co_return co_await keep->whoami();
}

asio::awaitable<api_result<std::string>> client_api::upload_filter(std::string user_id, std::string filter_json) {
  auto keep = impl_;
  co_return co_await keep->upload_filter(std::move(user_id), std::move(filter_json));
}

asio::awaitable<api_result<std::string>> client_api::sync(std::string since, std::string filter_id,
                                                          milliseconds timeout, bool full_state) {
  auto keep = impl_;
  co_return co_await keep->sync(std::move(since), std::move(filter_id), timeout, full_state);
}

asio::awaitable<api_result<std::string>> client_api::send_event(std::string room_id, std::string event_type,
                                                                std::string txn_id, std::string content_json) {
  auto keep = impl_;
  co_return co_await keep->send_event(std::move(room_id), std::move(event_type), std::move(txn_id),
                                      std::move(content_json));
}

asio::awaitable<api_result<api_void>> client_api::set_typing(std::string room_id, std::string user_id, bool typing,
                                                             milliseconds timeout) {
  auto keep = impl_;
  co_return co_await keep->set_typing(std::move(room_id), std::move(user_id), typing, timeout);
}

asio::awaitable<api_result<api_void>> client_api::send_receipt(std::string room_id, std::string event_id) {
  auto keep = impl_;
  co_return co_await keep->send_receipt(std::move(room_id), std::move(event_id));
}

asio::awaitable<api_result<api_void>> client_api::set_presence(std::string user_id, std::string status_msg,
                                                               std::string presence) {
  auto keep = impl_;
  co_return co_await keep->set_presence(std::move(user_id), std::move(status_msg), std::move(presence));
}

asio::awaitable<api_result<std::string>> client_api::join(std::string room_id_or_alias) {
  auto keep = impl_;
  co_return co_await keep->join(std::move(room_id_or_alias));
}

asio::awaitable<api_result<api_void>> client_api::leave(std::string room_id) {
  auto keep = impl_;
  co_return co_await keep->leave(std::move(room_id));
}

asio::awaitable<api_result<std::map<std::string, std::string>>> client_api::joined_members(std::string room_id) {
  auto keep = impl_;
  co_return co_await keep->joined_members(std::move(room_id));
}

asio::awaitable<api_result<std::string>> client_api::room_state(std::string room_id, std::string event_type,
                                                                std::string state_key) {
  auto keep = impl_;
  co_return co_await keep->room_state(std::move(room_id), std::move(event_type), std::move(state_key));
}

asio::awaitable<api_result<std::string>> client_api::messages(std::string room_id, std::string from, std::string dir,
                                                              int limit, std::string filter_json) {
  auto keep = impl_;
  co_return co_await keep->messages(std::move(room_id), std::move(from), std::move(dir), limit,
                                    std::move(filter_json));
}

asio::awaitable<api_result<std::string>> client_api::upload(std::string data, std::string filename,
                                                            std::string content_type) {
  auto keep = impl_;
  co_return co_await keep->upload(std::move(data), std::move(filename), std::move(content_type));
}

asio::awaitable<api_result<downloaded_media>> client_api::download(std::string mxc_uri, std::size_t max_bytes) {
  auto keep = impl_;
  co_return co_await keep->download(std::move(mxc_uri), max_bytes);
}

}  // namespace stargazer::platform::matrix

// Clients of a running gateway's REST API (docs/rest-api.md): the terminal client
// `stargazer chat` and the operator commands `stargazer instance create|list|delete`,
// `stargazer user add|list|remove`, `stargazer identity link|unlink|show` and
// `stargazer webchat invite|list|revoke`
// (docs/operations.md, "Operator commands").
//
// One http::client on a single-threaded io_context. Every failure ends the command with
// one line on stderr ("stargazer: error: ...", naming the REST API's error message) and
// status 1; bad usage was already refused by the parser with status 2.
//
// chat: the instance's event stream (Server-Sent Events) is opened first, which checks
// the URL, the key and the instance before anything is read. Each input line is then
// posted with ?wait=true; the bot's replies are printed as the event stream delivers
// them (several messages, files) and the turn ends when the POST returns with every
// reply of the turn, which also prints any reply the stream has not shown yet. Replies
// are shown once each (by id). Input is read by a thread, so replies arriving while the
// user types (another user's turn on the same instance) show at once.

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "roles.hpp"

#include "stargazer/core/spawn.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/client.hpp"
#include "stargazer/http/sse.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

namespace stargazer::roles {
namespace {

namespace asio = boost::asio;

// An operator command waits no longer than this for connecting and for each answer.
constexpr std::chrono::milliseconds connect_timeout{5000};
constexpr std::chrono::milliseconds request_timeout{30000};
// chat: the REST API's longest ?wait, and the client's margin on top of it.
constexpr int chat_wait_seconds = 120;
constexpr std::chrono::milliseconds chat_response_timeout{(chat_wait_seconds + 15) * 1000};
// chat: how many reply ids are remembered to show each reply once.
constexpr std::size_t remembered_ids = 4096;

// Ends the command: printed as "stargazer: error: <what>", status 1.
struct failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Text from the server made safe for a terminal: control characters (C0 but newline and
// tab, DEL, and C1 such as the one-byte CSI) become U+FFFD, so a reply cannot move the
// cursor, retitle the window or hide text.
std::string printable(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c == 0xC2 && i + 1 < in.size() && static_cast<unsigned char>(in[i + 1]) >= 0x80 &&
        static_cast<unsigned char>(in[i + 1]) <= 0x9F) {
      out += "\uFFFD";
      ++i;
    } else if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F) {
      if (c != '\r') out += "\uFFFD";
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// A string member of a JSON object, "" when absent or not a string.
std::string member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject() || !obj.HasMember(name) || !obj[name].IsString()) return {};
  return std::string(obj[name].GetString(), obj[name].GetStringLength());
}

rapidjson::Document parse_json(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str(), body.size());
  return d;
}

// Keeps the characters a URL may carry and %-encodes the rest (spaces, quotes, non-ASCII
// in a file name), leaving existing %XX escapes alone.
std::string url_safe(std::string_view path) {
  static constexpr std::string_view allowed = "-._~!$&'()*+,;=:@/%?#";
  std::string out;
  for (const char c : path) {
    const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       allowed.find(c) != std::string_view::npos;
    if (plain) out.push_back(c);
    else out += percent_encode(std::string_view(&c, 1));
  }
  return out;
}

std::string human_size(std::uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < 1024 * 1024) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024);
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024 * 1024));
}

// The width of UTF-8 text in a table: code points, not bytes.
std::size_t text_width(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

// Columns separated by two spaces, the last one not padded.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) width[i] = text_width(header[i]);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], text_width(row[i]));
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - text_width(cells[i]) + 2, ' ');
    }
    std::cout << out << '\n';
  };
  line(header);
  for (const auto& row : rows) line(row);
  std::cout.flush();
}

// ---------------------------------------------------------------------------------------
// The REST API as the commands call it

class rest_api {
public:
  rest_api(const asio::any_io_executor& ex, const std::string& url, std::string key,
           std::chrono::milliseconds response_timeout)
      : origin_(origin_of(url)),
        key_(std::move(key)),
        response_timeout_(response_timeout),
        client_(ex, origin_, settings_for(response_timeout)) {}

  http::request request(http::method verb, std::string target, std::string body = {}) const {
    http::request r;
    r.verb = verb;
    r.target = std::move(target);
    r.headers.emplace_back("authorization", "Bearer " + key_);
    r.headers.emplace_back("accept", "application/json");
    if (verb == http::method::post || verb == http::method::patch) {
      r.headers.emplace_back("content-type", "application/json");
      r.body = std::move(body);
    }
    return r;
  }

  // The response when its status is 2xx; a failure naming the problem otherwise.
  asio::awaitable<http::response> call(http::request req) {
    auto r = co_await client_.send(std::move(req));
    if (!r) throw failure(transport_error(r.error()));
    if (r->status < 200 || r->status >= 300) throw failure(http_error(*r));
    co_return std::move(*r);
  }

  std::string transport_error(std::error_code ec) const {
    if (http::is_timeout(ec))
      return fmt::format("the gateway at {} did not answer within {} s", origin_.to_string(),
                         response_timeout_.count() / 1000);
    return fmt::format("cannot reach the gateway at {}: {}", origin_.to_string(), ec.message());
  }

  // The REST API's error message with its status and code; for a response that is not
  // one (another server at --url, a proxy), the status and where it came from.
  std::string http_error(const http::response& r) const {
    const auto d = parse_json(r.body);
    if (!d.HasParseError() && d.IsObject() && d.HasMember("error")) {
      const auto message = member(d["error"], "message");
      if (!message.empty())
        return fmt::format("{} (HTTP {} {})", printable(message), r.status, printable(member(d["error"], "code")));
    }
    return fmt::format("the server at {} answered HTTP {} without a Stargazer error (is --url a gateway?)",
                       origin_.to_string(), r.status);
  }

  // An absolute URL for a path the API returned (file links).
  std::string absolute(std::string_view path) const {
    if (path.starts_with("http://") || path.starts_with("https://")) return url_safe(path);
    return origin_.to_string() + url_safe(path);
  }

  const http::base_url& origin() const { return origin_; }
  http::client& client() { return client_; }

private:
  static http::base_url origin_of(const std::string& url) {
    std::string error;
    auto u = http::parse_base_url(url, &error);
    if (!u) throw failure("--url: " + error);  // the parser checked it already
    return *u;
  }

  static http::client_settings settings_for(std::chrono::milliseconds response_timeout) {
    http::client_settings s;
    s.connect_timeout = connect_timeout;
    s.response_timeout = response_timeout;
    s.user_agent = std::string("stargazer-cli/") + STARGAZER_VERSION;
    return s;
  }

  http::base_url origin_;
  std::string key_;
  std::chrono::milliseconds response_timeout_;
  http::client client_;
};

std::string instances_path() { return "/redis-platform/instances"; }
std::string instance_path(const std::string& id) { return instances_path() + "/" + percent_encode(id); }
std::string identities_path() { return "/redis-platform/identities"; }
// An account ("platform:user_id") names itself with its ':'; a unified id has none.
std::string identity_path(const std::string& account_or_id) {
  if (account_or_id.find(':') != std::string::npos)
    return identities_path() + "/accounts/" + percent_encode(account_or_id);
  return identities_path() + "/" + percent_encode(account_or_id);
}

// ---------------------------------------------------------------------------------------
// Operator commands

asio::awaitable<void> instance_create(rest_api& api, const client_options& o) {
  std::string body = "{";
  if (!o.instance.empty()) body += "\"instance_id\":" + json::quoted(o.instance);
  if (!o.name.empty()) body += std::string(body.size() > 1 ? "," : "") + "\"display_name\":" + json::quoted(o.name);
  body += "}";
  auto req = api.request(http::method::post, instances_path(), std::move(body));
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  const auto d = parse_json(res.body);
  const std::vector<std::vector<std::string>> rows{{"instance_id", printable(member(d, "instance_id"))},
                                                   {"name", printable(member(d, "display_name"))},
                                                   {"created_at", printable(member(d, "created_at"))},
                                                   {"api_key", printable(member(d, "api_key"))}};
  for (const auto& row : rows) std::cout << fmt::format("{:<13}{}\n", row[0], row[1]);
  std::cout.flush();
  std::cerr << "The API key is shown only this once: store it now (chat uses it as --key or SG_INSTANCE_KEY).\n";
}

asio::awaitable<void> instance_list(rest_api& api, const client_options& o) {
  auto req = api.request(http::method::get, instances_path());
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  const auto d = parse_json(res.body);
  std::vector<std::vector<std::string>> rows;
  if (d.IsObject() && d.HasMember("instances") && d["instances"].IsArray())
    for (const auto& i : d["instances"].GetArray())
      rows.push_back({printable(member(i, "instance_id")), printable(member(i, "display_name")),
                      printable(member(i, "created_at"))});
  if (rows.empty()) {
    std::cerr << "no instances\n";
    co_return;
  }
  print_table({"INSTANCE", "NAME", "CREATED"}, rows);
}

asio::awaitable<void> instance_delete(rest_api& api, const client_options& o) {
  auto req = api.request(http::method::delete_, instance_path(o.instance));
  const auto res = co_await api.call(std::move(req));
  if (o.json) std::cout << res.body << std::endl;
  else std::cout << "deleted instance " << printable(o.instance) << std::endl;
}

asio::awaitable<void> user_add(rest_api& api, const client_options& o) {
  const auto body = fmt::format(R"({{"user_id":{},"display_name":{}}})", json::quoted(o.user_id), json::quoted(o.name));
  auto req = api.request(http::method::post, instance_path(o.instance) + "/users", body);
  const auto res = co_await api.call(std::move(req));
  if (o.json) std::cout << res.body << std::endl;
  else
    std::cout << fmt::format("registered user {} ({}) on instance {}", printable(o.user_id), printable(o.name),
                             printable(o.instance))
              << std::endl;
}

asio::awaitable<void> user_list(rest_api& api, const client_options& o) {
  auto req = api.request(http::method::get, instance_path(o.instance) + "/users");
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  const auto d = parse_json(res.body);
  std::vector<std::vector<std::string>> rows;
  if (d.IsObject() && d.HasMember("users") && d["users"].IsArray())
    for (const auto& u : d["users"].GetArray())
      rows.push_back({printable(member(u, "user_id")), printable(member(u, "display_name")),
                      printable(member(u, "registered_at"))});
  if (rows.empty()) {
    std::cerr << "no registered users: instance " << printable(o.instance) << " accepts messages from anyone\n";
    co_return;
  }
  print_table({"USER", "NAME", "REGISTERED"}, rows);
}

asio::awaitable<void> user_remove(rest_api& api, const client_options& o) {
  auto req = api.request(http::method::delete_, instance_path(o.instance) + "/users/" + percent_encode(o.user_id));
  const auto res = co_await api.call(std::move(req));
  if (o.json) std::cout << res.body << std::endl;
  else std::cout << fmt::format("removed user {} from instance {}", printable(o.user_id), printable(o.instance)) << std::endl;
}

// The strings of a JSON array member ([] when absent).
std::vector<std::string> string_items(const rapidjson::Value& obj, const char* name) {
  std::vector<std::string> out;
  if (obj.IsObject() && obj.HasMember(name) && obj[name].IsArray())
    for (const auto& v : obj[name].GetArray())
      if (v.IsString()) out.emplace_back(v.GetString(), v.GetStringLength());
  return out;
}

// unified_id and its accounts, one per line.
void print_identity(const rapidjson::Value& d) {
  std::cout << fmt::format("{:<12}{}\n", "unified_id", printable(member(d, "unified_id")));
  const auto accounts = string_items(d, "accounts");
  for (std::size_t i = 0; i < accounts.size(); ++i)
    std::cout << fmt::format("{:<12}{}\n", i == 0 ? "accounts" : "", printable(accounts[i]));
  std::cout.flush();
}

asio::awaitable<void> identity_link(rest_api& api, const client_options& o) {
  std::string accounts = "[";
  for (const auto& a : o.accounts) {
    if (accounts.size() > 1) accounts.push_back(',');
    json::append_quoted(accounts, a);
  }
  accounts += "]";
  std::string body = "{\"accounts\":" + accounts;
  if (!o.unified_id.empty()) body += ",\"unified_id\":" + json::quoted(o.unified_id);
  if (o.merge) body += ",\"merge\":true";
  body += "}";
  auto req = api.request(http::method::post, identities_path(), std::move(body));
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  const auto d = parse_json(res.body);
  const auto merged = string_items(d, "merged_ids");
  std::string how = res.status == 201 ? "a new unified id" : "unified id " + printable(member(d, "unified_id"));
  if (!merged.empty()) {
    std::string ids;
    for (const auto& m : merged) ids += (ids.empty() ? "" : ", ") + printable(m);
    how += " (merged " + ids + " into it)";
  }
  std::cout << "linked to " << how << "\n";
  print_identity(d);
}

asio::awaitable<void> identity_unlink(rest_api& api, const client_options& o) {
  const auto& who = o.accounts.at(0);
  auto req = api.request(http::method::delete_, identities_path() + "/accounts/" + percent_encode(who));
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  const auto d = parse_json(res.body);
  std::cout << fmt::format("unlinked {} from unified id {}", printable(who), printable(member(d, "unified_id")))
            << std::endl;
}

asio::awaitable<void> identity_show(rest_api& api, const client_options& o) {
  auto req = api.request(http::method::get, identity_path(o.accounts.at(0)));
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  print_identity(parse_json(res.body));
}

// ---------------------------------------------------------------------------------------
// Web chat sign-in (docs/webchat.md, "Sign-in")

std::string rooms_text(const rapidjson::Value& obj) {
  const auto rooms = string_items(obj, "rooms");
  if (rooms.empty()) return "every room";
  std::string out;
  for (const auto& r : rooms) out += (out.empty() ? "" : ",") + printable(r);
  return out;
}

std::string yes_no(const rapidjson::Value& obj, const char* name) {
  return obj.IsObject() && obj.HasMember(name) && obj[name].IsBool() && obj[name].GetBool() ? "yes" : "no";
}

asio::awaitable<void> webchat_invite(rest_api& api, const client_options& o) {
  std::string body = "{\"name\":" + json::quoted(o.name);
  if (!o.rooms.empty()) {
    body += ",\"rooms\":[";
    for (std::size_t i = 0; i < o.rooms.size(); ++i) body += (i ? "," : "") + json::quoted(o.rooms[i]);
    body += "]";
  }
  body += fmt::format(",\"expires_in\":{}", o.expires_seconds);
  if (o.admin) body += ",\"admin\":true";
  body += "}";
  auto req = api.request(http::method::post, "/webchat/invites", std::move(body));
  const auto res = co_await api.call(std::move(req));
  if (o.json) {
    std::cout << res.body << std::endl;
    co_return;
  }
  const auto d = parse_json(res.body);
  const auto link = printable(member(d, "link"));
  const std::vector<std::vector<std::string>> rows{{"invite_id", printable(member(d, "invite_id"))},
                                                   {"name", printable(member(d, "name"))},
                                                   {"user_id", printable(member(d, "user_id"))},
                                                   {"rooms", rooms_text(d)},
                                                   {"admin", yes_no(d, "admin")},
                                                   {"expires_at", printable(member(d, "expires_at"))},
                                                   {"link", link}};
  for (const auto& row : rows) std::cout << fmt::format("{:<12}{}\n", row[0], row[1]);
  std::cout.flush();
  std::cerr << "The link works once and is shown only now: send it to " << printable(o.name) << " privately.\n";
  if (link.starts_with("http://127.") || link.starts_with("http://localhost") || link.starts_with("http://[::1]"))
    std::cerr << "The link names this machine: set --public-url (SG_PUBLIC_URL) on the gateway to the address "
                 "people reach it at.\n";
}

asio::awaitable<void> webchat_list(rest_api& api, const client_options& o) {
  auto invites_req = api.request(http::method::get, "/webchat/invites");
  const auto invites = co_await api.call(std::move(invites_req));
  auto sessions_req = api.request(http::method::get, "/webchat/sessions");
  const auto sessions = co_await api.call(std::move(sessions_req));
  if (o.json) {
    // {"invites":[...]} and {"sessions":[...]} as one object.
    auto joined = invites.body.substr(0, invites.body.rfind('}')) + "," + sessions.body.substr(sessions.body.find('{') + 1);
    std::cout << joined << std::endl;
    co_return;
  }
  const auto di = parse_json(invites.body);
  std::vector<std::vector<std::string>> invite_rows;
  if (di.IsObject() && di.HasMember("invites") && di["invites"].IsArray())
    for (const auto& i : di["invites"].GetArray())
      invite_rows.push_back({printable(member(i, "invite_id")), printable(member(i, "name")), rooms_text(i),
                             yes_no(i, "admin"), printable(member(i, "state")), printable(member(i, "expires_at"))});
  const auto ds = parse_json(sessions.body);
  std::vector<std::vector<std::string>> session_rows;
  if (ds.IsObject() && ds.HasMember("sessions") && ds["sessions"].IsArray())
    for (const auto& s : ds["sessions"].GetArray())
      session_rows.push_back({printable(member(s, "session_id")), printable(member(s, "name")), rooms_text(s),
                              yes_no(s, "admin"), printable(member(s, "created_at")),
                              printable(member(s, "expires_at"))});
  if (invite_rows.empty()) std::cerr << "no invites\n";
  else print_table({"INVITE", "NAME", "ROOMS", "ADMIN", "STATE", "EXPIRES"}, invite_rows);
  if (!invite_rows.empty() && !session_rows.empty()) std::cout << std::endl;
  if (session_rows.empty()) std::cerr << "no signed-in sessions\n";
  else print_table({"SESSION", "NAME", "ROOMS", "ADMIN", "SIGNED_IN", "EXPIRES"}, session_rows);
}

// A session id, then an invite id (both 16 hex digits), then a name: the first that exists.
asio::awaitable<void> webchat_revoke(rest_api& api, const client_options& o) {
  const auto& target = o.revoke_target;
  const bool looks_like_id =
      target.size() == 16 && target.find_first_not_of("0123456789abcdef") == std::string::npos;
  std::vector<std::pair<std::string, std::string>> attempts;  // path, what it revokes
  if (looks_like_id) {
    attempts.emplace_back("/webchat/sessions/" + target, "session");
    attempts.emplace_back("/webchat/invites/" + target, "invite");
  }
  attempts.emplace_back("/webchat/users/" + percent_encode(target), "name");
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    auto req = api.request(http::method::delete_, attempts[i].first);
    auto r = co_await api.client().send(std::move(req));
    if (!r) throw failure(api.transport_error(r.error()));
    if (r->status == 404 && i + 1 < attempts.size()) continue;
    if (r->status < 200 || r->status >= 300) throw failure(api.http_error(*r));
    if (o.json) {
      std::cout << r->body << std::endl;
      co_return;
    }
    const auto d = parse_json(r->body);
    const auto& what = attempts[i].second;
    if (what == "session" && d.HasMember("session"))
      std::cout << fmt::format("revoked session {} of {}; its open chats close within seconds\n", printable(target),
                               printable(member(d["session"], "name")));
    else if (what == "invite" && d.HasMember("invite"))
      std::cout << fmt::format("revoked invite {} for {}\n", printable(target), printable(member(d["invite"], "name")));
    else
      std::cout << fmt::format("revoked {}: {} sessions, {} pending invites\n", printable(target),
                               d.HasMember("sessions") && d["sessions"].IsUint64() ? d["sessions"].GetUint64() : 0,
                               d.HasMember("invites") && d["invites"].IsUint64() ? d["invites"].GetUint64() : 0);
    std::cout.flush();
    co_return;
  }
}

asio::awaitable<int> run_operator(rest_api& api, const parsed_command& cmd) {
  const auto& o = cmd.client;
  switch (cmd.what) {
    case command::instance_create: co_await instance_create(api, o); break;
    case command::instance_list: co_await instance_list(api, o); break;
    case command::instance_delete: co_await instance_delete(api, o); break;
    case command::user_add: co_await user_add(api, o); break;
    case command::user_list: co_await user_list(api, o); break;
    case command::user_remove: co_await user_remove(api, o); break;
    case command::identity_link: co_await identity_link(api, o); break;
    case command::identity_unlink: co_await identity_unlink(api, o); break;
    case command::identity_show: co_await identity_show(api, o); break;
    case command::webchat_invite: co_await webchat_invite(api, o); break;
    case command::webchat_list: co_await webchat_list(api, o); break;
    case command::webchat_revoke: co_await webchat_revoke(api, o); break;
    default: throw failure("not an operator command");
  }
  co_return 0;
}

// ---------------------------------------------------------------------------------------
// chat

// Reads stdin on its own thread and hands each line (without its line end) to the io
// thread, then nullopt at the end of input. A blocking read serves terminals, pipes and
// regular files alike (a reactor refuses regular files); poll() on a self-pipe lets
// stop() end the thread even while it waits for a terminal.
class line_reader {
public:
  line_reader(asio::io_context& io, std::function<void(std::optional<std::string>)> deliver)
      : io_(io), deliver_(std::move(deliver)) {
    if (::pipe2(wake_, O_CLOEXEC) != 0) throw failure("cannot create a pipe for reading stdin");
  }
  ~line_reader() {
    stop();
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  line_reader(const line_reader&) = delete;
  line_reader& operator=(const line_reader&) = delete;

  void start() {
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  }

  void stop() {
    if (!thread_.joinable()) return;
    const char byte = 0;
    [[maybe_unused]] const auto n = ::write(wake_[1], &byte, 1);
    thread_.join();
  }

private:
  void post(std::optional<std::string> line) {
    asio::post(io_, [deliver = deliver_, line = std::move(line)]() mutable { deliver(std::move(line)); });
  }

  void run() {
    std::string pending;
    char buf[4096];
    for (;;) {
      pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents != 0) return;  // stop(): no end-of-input either
      if (fds[0].revents == 0) continue;
      const auto n = ::read(STDIN_FILENO, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) break;  // end of input (or an unreadable stdin, which ends it too)
      pending.append(buf, static_cast<std::size_t>(n));
      std::size_t start = 0;
      for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n', start)) {
        auto line = pending.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        post(std::move(line));
        start = nl + 1;
      }
      pending.erase(0, start);
    }
    if (!pending.empty()) post(std::move(pending));  // a last line without a line end
    post(std::nullopt);
  }

  asio::io_context& io_;
  std::function<void(std::optional<std::string>)> deliver_;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

// What chat writes. On a terminal: a prompt while waiting for input, a "…" while the bot
// thinks, both erased before a reply is printed and drawn again after it. Piped: replies
// only, one "Name: text" block each.
class terminal {
public:
  explicit terminal(const std::string& bot_name)
      : bot_(printable(bot_name)),
        tty_(::isatty(STDOUT_FILENO) == 1),
        interactive_(tty_ && ::isatty(STDIN_FILENO) == 1) {}

  bool interactive() const { return interactive_; }

  // A reply: the bot's name, then the text; continuation lines are indented under it.
  void reply(std::string_view text) {
    const std::string prefix = bot_ + ": ";
    std::string out = prefix;
    const std::string indent(text_width(prefix), ' ');
    for (const char c : printable(text)) {
      out.push_back(c);
      if (c == '\n') out += indent;
    }
    write(out + "\n");
  }

  void info(std::string_view text) { write(std::string(text) + "\n"); }

  // A note on stderr (not part of the conversation).
  void note(std::string_view text) {
    erase();
    std::cerr << text << std::endl;
    redraw();
  }

  void error(std::string_view text) {
    leave();
    std::cerr << "stargazer: error: " << text << std::endl;
  }

  void thinking(bool on) {
    if (on == thinking_) return;
    erase();
    thinking_ = on;
    redraw();
  }

  // Erases the prompt or the indicator for good.
  void leave() {
    erase();
    thinking_ = prompt_ = false;
  }

  // Interactive only: "> " until a line is read.
  void prompt(bool on) {
    if (!interactive_ || on == prompt_) return;
    if (!on) {
      prompt_ = false;  // the user's Enter moved the cursor to a new line
      shown_ = false;
      return;
    }
    erase();
    prompt_ = true;
    redraw();
  }

private:
  void write(const std::string& text) {
    erase();
    std::cout << text;
    std::cout.flush();
    redraw();
  }

  void erase() {
    if (!shown_) return;
    std::cout << "\r\033[K";
    shown_ = false;
  }

  void redraw() {
    if (!tty_ || shown_) return;
    if (thinking_) std::cout << bot_ << ": \u2026";
    else if (prompt_) std::cout << "> ";
    else return;
    std::cout.flush();
    shown_ = true;
  }

  std::string bot_;
  bool tty_;
  bool interactive_;
  bool thinking_ = false;
  bool prompt_ = false;
  bool shown_ = false;  // the prompt or the indicator is on the current line
};

class chat_session {
public:
  // `api` posts messages; `events` (a shorter deadline: the gateway sends a heartbeat at
  // least every 15 s) holds the event stream.
  chat_session(asio::io_context& io, rest_api& api, rest_api& events, const parsed_command& cmd)
      : api_(api),
        events_(events),
        opts_(cmd.client),
        term_(cmd.cfg.bot_name),
        wake_(io, std::chrono::steady_clock::time_point::max()),
        retry_(io),
        reader_(io, [this](std::optional<std::string> line) {
          lines_.push_back(std::move(line));
          wake_.cancel();
        }) {}

  terminal& term() { return term_; }

  asio::awaitable<int> run() {
    auto ex = co_await asio::this_coro::executor;
    spawn(ex, listen(), "chat");
    while (stream_ == stream_state::connecting) co_await wait();
    if (stream_ == stream_state::failed) throw failure(stream_error_);
    if (term_.interactive())
      term_.info(fmt::format("Chatting with instance {} at {} as {}. /quit or Ctrl-D leaves.",
                             printable(opts_.instance), api_.origin().to_string(), printable(opts_.user_name)));
    reader_.start();
    for (;;) {
      term_.prompt(true);
      while (lines_.empty()) co_await wait();
      auto line = std::move(lines_.front());
      lines_.pop_front();
      if (!line) {  // end of input (Ctrl-D leaves the cursor after the prompt)
        term_.leave();
        break;
      }
      term_.prompt(false);
      if (line->find_first_not_of(" \t") == std::string::npos) continue;
      if (*line == "/quit" || *line == "/exit") break;
      co_await send(*line);
    }
    co_return 0;
  }

  // Ends the event stream and the input thread; run() must have returned.
  void stop() {
    stopping_ = true;
    reader_.stop();
    events_.client().abort_streams();
    retry_.cancel();
  }

private:
  enum class stream_state { connecting, open, failed };

  asio::awaitable<void> wait() {
    wake_.expires_at(std::chrono::steady_clock::time_point::max());
    boost::system::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  std::string events_path() const { return instance_path(opts_.instance) + "/events"; }

  // The instance's event stream, reopened after a drop from the last event seen. The
  // first attempt decides whether chat starts at all.
  asio::awaitable<void> listen() {
    std::string last_id;
    while (!stopping_) {
      http::sse_parser parser;
      auto req = events_.request(http::method::get, events_path());
      req.headers.emplace_back("accept", "text/event-stream");
      if (!last_id.empty()) req.headers.emplace_back("last-event-id", last_id);
      http::client::stream_handler handler;
      handler.on_head = [this](const http::response&) {
        if (stream_ == stream_state::connecting) {
          stream_ = stream_state::open;
          wake_.cancel();
        }
        return !stopping_;
      };
      handler.on_body = [this, &parser, &last_id](std::string_view piece) {
        for (const auto& e : parser.feed(piece)) on_event(e);
        if (!parser.last_event_id().empty()) last_id = parser.last_event_id();
        return !stopping_ && !parser.failed();
      };
      auto r = co_await events_.client().stream(std::move(req), std::move(handler));
      if (stopping_) co_return;
      if (stream_ == stream_state::connecting) {
        stream_ = stream_state::failed;
        if (!r) stream_error_ = events_.transport_error(r.error());
        else if (r->status >= 300) stream_error_ = events_.http_error(*r);
        else stream_error_ = fmt::format("the event stream of instance {} ended at once", printable(opts_.instance));
        wake_.cancel();
        co_return;
      }
      if (r && r->status >= 400 && r->status < 500) {
        // The key or the instance went away: the next message will say why.
        term_.note(fmt::format("(event stream closed: {})", events_.http_error(*r)));
        co_return;
      }
      log::logger("chat").debug("event stream dropped ({}); reopening", r ? "ended" : r.error().message());
      retry_.expires_after(parser.retry().value_or(std::chrono::milliseconds(2000)));
      boost::system::error_code ec;
      co_await retry_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  void on_event(const http::sse_event& e) {
    if (e.type != "message" && e.type != "file") return;  // turn_complete: the POST says so
    const auto d = parse_json(e.data);
    if (!d.HasParseError() && d.IsObject()) show(d);
  }

  // One turn: post with ?wait=true; replies show as the stream delivers them, and the
  // POST's answer (every reply of the turn) fills in what the stream has not shown.
  asio::awaitable<void> send(const std::string& text) {
    const auto body = fmt::format(R"({{"text":{},"user_id":{},"user_name":{}}})", json::quoted(text),
                                  json::quoted(opts_.user_id), json::quoted(opts_.user_name));
    auto req = api_.request(http::method::post,
                            fmt::format("{}/messages?wait=true&timeout={}", instance_path(opts_.instance),
                                        chat_wait_seconds),
                            body);
    term_.thinking(true);
    const auto res = co_await api_.call(std::move(req));
    term_.thinking(false);
    const auto d = parse_json(res.body);
    if (d.IsObject() && d.HasMember("responses") && d["responses"].IsArray())
      for (const auto& reply : d["responses"].GetArray()) show(reply);
    const bool complete = d.IsObject() && d.HasMember("complete") && d["complete"].IsBool() && d["complete"].GetBool();
    if (!complete)
      term_.note(fmt::format("(no complete answer within {} s; later replies show as they arrive)", chat_wait_seconds));
  }

  // Prints a reply unless it was shown already.
  void show(const rapidjson::Value& reply) {
    const auto id = member(reply, "id");
    if (!id.empty() && !seen_.insert(id).second) return;
    if (!id.empty()) {
      seen_order_.push_back(id);
      if (seen_order_.size() > remembered_ids) {
        seen_.erase(seen_order_.front());
        seen_order_.pop_front();
      }
    }
    const auto type = member(reply, "type");
    if (type == "message") {
      term_.reply(member(reply, "text"));
    } else if (type == "file") {
      std::string size;
      if (reply.HasMember("size") && reply["size"].IsUint64()) size = ", " + human_size(reply["size"].GetUint64());
      term_.reply(fmt::format("[file] {} ({}{}) {}", member(reply, "filename"), member(reply, "mimetype"), size,
                              api_.absolute(member(reply, "url"))));
    }
  }

  rest_api& api_;
  rest_api& events_;
  const client_options& opts_;
  terminal term_;
  asio::steady_timer wake_;   // input arrived or the stream opened or failed
  asio::steady_timer retry_;  // before reopening a dropped event stream
  std::deque<std::optional<std::string>> lines_;
  stream_state stream_ = stream_state::connecting;
  std::string stream_error_;
  bool stopping_ = false;
  std::unordered_set<std::string> seen_;
  std::deque<std::string> seen_order_;
  line_reader reader_;  // last: its thread calls back into the members above
};

int run_chat(const parsed_command& cmd) {
  asio::io_context io(1);
  const auto& key = cmd.client.key.empty() ? cmd.cfg.admin_api_key : cmd.client.key;
  rest_api api(io.get_executor(), cmd.client.url, key, chat_response_timeout);
  rest_api events(io.get_executor(), cmd.client.url, key, request_timeout);
  chat_session session(io, api, events, cmd);
  int status = 1;
  asio::co_spawn(io, session.run(), [&](std::exception_ptr e, int rc) {
    status = rc;
    if (e) {
      status = 1;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        session.term().error(ex.what());
      }
    }
    session.stop();
  });
  io.run();
  return status;
}

int run_operator_command(const parsed_command& cmd) {
  asio::io_context io(1);
  rest_api api(io.get_executor(), cmd.client.url, cmd.cfg.admin_api_key, request_timeout);
  int status = 1;
  asio::co_spawn(io, run_operator(api, cmd), [&](std::exception_ptr e, int rc) {
    status = rc;
    if (e) {
      status = 1;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "stargazer: error: " << ex.what() << std::endl;
      }
    }
  });
  io.run();
  return status;
}

}  // namespace

int run_client(const parsed_command& cmd) {
  // Output goes to stdout; info lines of the HTTP client would only be noise on stderr.
  auto level = *log::parse_level(cmd.cfg.log_level);
  if (level == log::level::info) level = log::level::warn;
  log::configure(level, *log::parse_format(cmd.cfg.log_format));
  try {
    if (cmd.what == command::chat) return run_chat(cmd);
    return run_operator_command(cmd);
  } catch (const std::exception& e) {
    std::cerr << "stargazer: error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace stargazer::roles

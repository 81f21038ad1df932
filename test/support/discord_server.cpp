#include "discord_server.hpp"

#include "raw_http.hpp"

#include "stargazer/core/json_value.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <stdexcept>
#include <thread>

namespace stargazer::test {

using namespace std::chrono_literals;
namespace json = stargazer::json;


discord_test_server::discord_test_server(std::vector<std::string> args, std::string token) : token_(std::move(token)) {
  std::vector<std::string> argv{"/usr/bin/python3", "-B", STARGAZER_SOURCE_DIR "/test/support/discord/discord_server.py",
                                "--port", "0", "--token", token_};
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = std::make_unique<child_process>(std::move(argv));
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < until) {
    const auto out = process_->output();
    if (const auto at = out.find("READY port="); at != std::string::npos) {
      port_ = static_cast<std::uint16_t>(std::stoi(out.substr(at + 11)));
      return;
    }
    if (process_->wait(50ms)) break;
  }
  throw std::runtime_error("the Discord test server did not start: " + process_->output());
}

discord_test_server::~discord_test_server() = default;

std::string discord_test_server::api_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/api/v10"; }

rapidjson::Document discord_test_server::control(const std::string& method, const std::string& path,
                                                 const std::string& body) {
  const auto r = http_request(port_, method, path, body);
  if (r.status < 200 || r.status >= 300)
    throw std::runtime_error(method + " " + path + " answered " + std::to_string(r.status) + ": " + r.body);
  rapidjson::Document doc;
  doc.Parse(r.body.c_str(), r.body.size());
  return doc;
}

std::string discord_test_server::bot_user_id() {
  const auto state = control("GET", "/_test/state");
  return json::string_member(state["bot_user"], "id");
}

std::string discord_test_server::guild_id(std::size_t i) {
  const auto state = control("GET", "/_test/state");
  return json::string_member(state["guilds"][static_cast<rapidjson::SizeType>(i)], "id");
}

std::string discord_test_server::channel_id(std::size_t guild, std::size_t channel) {
  const auto state = control("GET", "/_test/state");
  return json::string_member(state["guilds"][static_cast<rapidjson::SizeType>(guild)]["channels"][static_cast<rapidjson::SizeType>(channel)], "id");
}

std::string discord_test_server::post_message(const std::string& channel_id, const std::string& user_id,
                                              const std::string& content, const std::string& extra_fields) {
  rapidjson::StringBuffer quoted;
  rapidjson::Writer<rapidjson::StringBuffer> w(quoted);
  w.String(content.c_str(), static_cast<rapidjson::SizeType>(content.size()));
  const auto body = "{\"channel_id\":\"" + channel_id + "\",\"author\":{\"id\":\"" + user_id +
                    "\",\"username\":\"user" + user_id + "\"},\"content\":" + quoted.GetString() + extra_fields + "}";
  const auto answer = control("POST", "/_test/messages", body);
  return json::string_member(answer["message"], "id");
}

rapidjson::Document discord_test_server::channel_messages(const std::string& channel_id) {
  return control("GET", "/_test/channels/" + channel_id + "/messages");
}

std::vector<std::string> discord_test_server::bot_messages(const std::string& channel_id) {
  const auto bot = bot_user_id();
  const auto doc = channel_messages(channel_id);
  const rapidjson::Value& list = doc.IsArray() ? doc : doc["messages"];
  std::vector<std::string> out;
  for (const auto& m : list.GetArray())
    if (json::string_member(m["author"], "id") == bot) out.push_back(json::string_member(m, "content"));
  return out;
}

int discord_test_server::connected_sessions() {
  const auto state = control("GET", "/_test/state");
  int n = 0;
  if (state.HasMember("sessions") && state["sessions"].IsArray())
    for (const auto& s : state["sessions"].GetArray())
      if (s.HasMember("connected") && s["connected"].IsBool() && s["connected"].GetBool()) ++n;
  return n;
}

long discord_test_server::counter(const std::string& name) {
  const auto doc = control("GET", "/_test/requests?since=1000000000");
  if (!doc.HasMember("counters") || !doc["counters"].HasMember(name.c_str())) return 0;
  return doc["counters"][name.c_str()].GetInt64();
}

}  // namespace stargazer::test

#pragma once
// The Discord API test server (test/support/discord/discord_server.py, Debian's python3 with
// python3-aiohttp) as a child process on a free port, with its control API (/_test/...)
// for tests: post as users, break connections, read what the bot sent.

#include "child_process.hpp"

#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::test {

class discord_test_server {
public:
  // `args`: extra server flags ("--shards", "4", ...).
  explicit discord_test_server(std::vector<std::string> args = {}, std::string token = "test-token");
  ~discord_test_server();

  std::uint16_t port() const { return port_; }
  const std::string& token() const { return token_; }
  std::string api_url() const;  // http://127.0.0.1:<port>/api/v10
  std::string bot_user_id();
  // Guild i's id and its text channels' ids (the server's test world).
  std::string guild_id(std::size_t i = 0);
  std::string channel_id(std::size_t guild = 0, std::size_t channel = 0);

  // The control API: JSON in, JSON out (throws on a transport failure or a non-2xx answer).
  rapidjson::Document control(const std::string& method, const std::string& path, const std::string& body = "{}");
  // A user posts `content` in a channel; the new message's id.
  std::string post_message(const std::string& channel_id, const std::string& user_id, const std::string& content,
                           const std::string& extra_fields = {});
  // Every message of the channel, oldest first.
  rapidjson::Document channel_messages(const std::string& channel_id);
  // The bot's messages in the channel (their content), oldest first.
  std::vector<std::string> bot_messages(const std::string& channel_id);
  // Gateway sessions connected and identified or resumed now.
  int connected_sessions();
  // A counter of GET /_test/requests ("identifies", "resumes", "rest_429", ...).
  long counter(const std::string& name);

  std::string output() const { return process_->output(); }

private:
  std::unique_ptr<child_process> process_;
  std::uint16_t port_ = 0;
  std::string token_;
};

}  // namespace stargazer::test

#pragma once
// The Matrix homeserver test server (test/support/matrix/homeserver.py) as a child process,
// with its control API. The including file defines STARGAZER_SOURCE_DIR (the checkout).

#include "child_process.hpp"
#include "raw_http.hpp"

#include "stargazer/core/strings.hpp"

#include <rapidjson/document.h>

#include <signal.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace stargazer::test {

using namespace std::chrono_literals;

struct matrix_test_server {
  matrix_test_server() {
    process = std::make_unique<child_process>(std::vector<std::string>{
        "/usr/bin/python3", "-B", STARGAZER_SOURCE_DIR "/test/support/matrix/homeserver.py", "--port", "0"});
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < until) {
      const auto out = process->output();
      if (const auto at = out.find("READY port="); at != std::string::npos) {
        port = static_cast<std::uint16_t>(std::stoi(out.substr(at + 11)));
        return;
      }
      if (process->wait(50ms)) break;
    }
    throw std::runtime_error("the Matrix test homeserver did not start: " + process->output());
  }
  ~matrix_test_server() {
    process->signal(SIGTERM);
    process->wait(5s);
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }

  rapidjson::Document control(const std::string& method, const std::string& path, const std::string& body = {}) {
    const auto r = http_request(port, method, path, body);
    if (r.status < 200 || r.status >= 300)
      throw std::runtime_error(method + " " + path + " answered " + std::to_string(r.status) + ": " + r.body);
    rapidjson::Document doc;
    doc.Parse(r.body.c_str(), r.body.size());
    return doc;
  }

  // Creates a user with a password; returns the control API's answer.
  rapidjson::Document user(const std::string& localpart, const std::string& password) {
    return control("POST", "/_test/users",
                   R"({"localpart":")" + localpart + R"(","password":")" + password + R"(","displayname":")" +
                       localpart + R"( name"})");
  }

  std::string room(const std::string& creator, const std::string& member) {
    auto d = control("POST", "/_test/rooms", R"({"creator":")" + creator + R"(","name":"Test","members":[")" +
                                                 member + R"("]})");
    return d["room_id"].GetString();
  }

  std::string post(const std::string& room_id, const std::string& sender, const std::string& body) {
    auto d = control("POST", "/_test/rooms/" + stargazer::percent_encode(room_id) + "/send",
                     R"({"sender":")" + sender + R"(","content":{"msgtype":"m.text","body":")" + body + R"("}})");
    return d["event_id"].GetString();
  }

  rapidjson::Document room_view(const std::string& room_id) {
    return control("GET", "/_test/rooms/" + stargazer::percent_encode(room_id));
  }

  std::unique_ptr<child_process> process;
  std::uint16_t port = 0;
};

}  // namespace stargazer::test

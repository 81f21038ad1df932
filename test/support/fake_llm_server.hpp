#pragma once
// An OpenAI-compatible chat completions server for tests, on the project's own
// http::http_server and router: real HTTP over loopback on a free port, run by its own
// io_context thread. POST /v1/chat/completions answers from a script, a queue of replies
// (a text, tool calls, an HTTP error with an optional Retry-After, a malformed body, each
// optionally delayed); when the queue is empty it answers the fallback, by default an
// echo of the last user message, so it can also back end-to-end tests of a worker.
// Every request is recorded (body and headers) for assertions. All members are
// thread-safe.
//
// Replies have the API's shapes: {"id","object":"chat.completion","created","model",
// "choices":[{"index":0,"message":{"role":"assistant","content",...},"finish_reason"}],
// "usage":{"prompt_tokens","completion_tokens","total_tokens"}} with word counts as tokens
// (prompt: the content of every message; completion: the reply text).

#include "stargazer/http/server.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::test {

struct fake_tool_call {
  std::string name;
  std::string arguments_json = "{}";
};

struct fake_reply {
  enum class kind { text, tool_calls, status, malformed };
  kind what = kind::text;
  std::string text;                     // text: the content; status and malformed: the body
  std::vector<fake_tool_call> calls;    // tool_calls
  unsigned status = 200;                // status
  std::string retry_after;              // status: a Retry-After header when not empty
  std::chrono::milliseconds delay{0};   // waited before answering

  static fake_reply reply(std::string content);
  static fake_reply tool_calls(std::vector<fake_tool_call> calls);
  static fake_reply error(unsigned status, std::string retry_after = {},
                          std::string body = R"({"error":{"message":"scripted failure","type":"test_error"}})");
  static fake_reply malformed(std::string body = R"({"choices": [{"message": )");
  // The same reply, answered after `d`.
  fake_reply after(std::chrono::milliseconds d) &&;
};

// One request as received.
struct fake_request {
  std::string body;
  std::string authorization;  // the Authorization header, empty when absent
  std::string content_type;
  std::chrono::steady_clock::time_point received;
};

struct fake_llm_options {
  // `port` is ignored: a free one is picked. No per-address cap: every client is on 127.0.0.1.
  http::server_settings server{.max_connections_per_ip = 0};
  // The answer when the script is empty, given the last user message's text. Empty: echo it.
  std::function<fake_reply(std::string_view last_user_text)> fallback;
  // Asked first for every request, with its body and last user message: a reply answers
  // it, nullopt leaves it to the script and the fallback. Tests tell kinds of request apart
  // with it (triage, heartbeat, status: by their prompts' first words) while the script
  // answers the replies. Called under the server's lock, on its thread.
  std::function<std::optional<fake_reply>(std::string_view body, std::string_view last_user_text)> route;
};

class fake_llm_server {
public:
  explicit fake_llm_server(fake_llm_options options = {});
  ~fake_llm_server();
  fake_llm_server(const fake_llm_server&) = delete;
  fake_llm_server& operator=(const fake_llm_server&) = delete;

  // Appends to the script; the next request takes the oldest entry.
  void push(fake_reply reply);
  void push(std::vector<fake_reply> replies);
  std::size_t script_left() const;

  std::uint16_t port() const { return port_; }
  // "http://127.0.0.1:<port>/v1": the base URL an OpenAI client is given.
  std::string base_url() const;

  std::vector<fake_request> requests() const;
  std::size_t request_count() const;
  // Polls until request_count() >= n; false on timeout.
  bool wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const;
  // Connections open on the server side now.
  std::size_t open_connections() const;

private:
  struct state;
  std::shared_ptr<state> state_;
  std::uint16_t port_ = 0;
};

}  // namespace stargazer::test

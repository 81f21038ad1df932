#pragma once
// The chat-completion model every LLM provider speaks (the OpenAI chat completions
// shapes: messages with roles, tool definitions, tool calls), and the provider interface
// the worker's message processor calls. Providers: llm/openai_client.hpp (any
// OpenAI-compatible HTTP API) and llm/echo_client.hpp (offline, deterministic).

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace stargazer::llm {

// One function call the model asked for. `arguments_json` is the model's JSON text,
// passed through unparsed (models do produce invalid JSON; the tool registry reports it).
struct tool_call {
  std::string id;
  std::string name;
  std::string arguments_json;
};

enum class role { system, user, assistant, tool };
std::string_view to_string(role r);

struct message {
  llm::role role = llm::role::user;
  std::string content;
  // The speaker's display name (user attribution in rooms with several people).
  // Providers present it where their model reads it: the OpenAI client prefixes the
  // content with "Name: " (the API's own `name` field is restricted and often ignored).
  std::string name;
  std::vector<tool_call> tool_calls;  // assistant messages that call tools
  std::string tool_call_id;           // tool messages: the call this answers
};

// A tool offered to the model: `parameters_json` is a JSON-Schema object as text.
struct tool_definition {
  std::string name;
  std::string description;
  std::string parameters_json = R"({"type":"object","properties":{}})";
};

// What a request is for. Providers send every kind alike; the offline echo provider
// answers by kind (llm/echo_client.hpp), so tests and offline runs stay deterministic.
enum class request_kind {
  reply,      // a turn's answer
  triage,     // should the bot answer a message not addressed to it? (yes/no)
  heartbeat,  // something useful to say in a quiet channel, or nothing
  status,     // the bot's status line
};

struct request {
  std::vector<message> messages;
  std::vector<tool_definition> tools;
  std::string model;                  // empty: the provider's configured model
  // Sampling; unset: the provider's configured value (openai_settings), else not sent.
  std::optional<double> temperature;
  std::optional<int> max_tokens;
  std::optional<double> top_p;
  std::string trace_id;               // for logs
  request_kind kind = request_kind::reply;
  std::string bot_name;               // triage: the name the echo provider looks for
};

struct usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

struct completion {
  std::string content;
  std::vector<tool_call> tool_calls;  // non-empty: run them and ask again
  std::string finish_reason;
  std::string model;
  llm::usage usage;
};

// Why a completion failed, after the provider's own retries.
struct failure {
  enum class kind {
    transport,     // DNS, connect, TLS, connection reset
    timeout,       // connect or response deadline passed
    rate_limited,  // 429 after the retries
    server_error,  // 5xx after the retries
    rejected,      // another 4xx (bad key, bad request): not retried
    bad_response,  // 2xx with a body that is not a chat completion, or an oversized/non-HTTP reply
  };
  kind what = kind::transport;
  int http_status = 0;  // 0: no HTTP status
  std::string detail;
};
std::string_view to_string(failure::kind k);

using outcome = std::variant<completion, failure>;

class client {
public:
  virtual ~client() = default;
  virtual std::string_view provider() const = 0;
  virtual std::string_view model() const = 0;
  virtual boost::asio::awaitable<outcome> complete(request req) = 0;
};

}  // namespace stargazer::llm

#include "fake_llm_server.hpp"

#include "stargazer/core/metrics.hpp"
#include "stargazer/http/router.hpp"

#include <boost/asio.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <deque>
#include <future>
#include <list>
#include <mutex>
#include <thread>

namespace stargazer::test {

namespace asio = boost::asio;
using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

fake_reply fake_reply::reply(std::string content) {
  fake_reply r;
  r.what = kind::text;
  r.text = std::move(content);
  return r;
}

fake_reply fake_reply::tool_calls(std::vector<fake_tool_call> calls) {
  fake_reply r;
  r.what = kind::tool_calls;
  r.calls = std::move(calls);
  return r;
}

fake_reply fake_reply::error(unsigned status, std::string retry_after, std::string body) {
  fake_reply r;
  r.what = kind::status;
  r.status = status;
  r.retry_after = std::move(retry_after);
  r.text = std::move(body);
  return r;
}

fake_reply fake_reply::malformed(std::string body) {
  fake_reply r;
  r.what = kind::malformed;
  r.text = std::move(body);
  return r;
}

fake_reply fake_reply::after(std::chrono::milliseconds d) && {
  delay = d;
  return std::move(*this);
}

namespace {

std::int64_t word_count(std::string_view text) {
  std::int64_t words = 0;
  bool in_word = false;
  for (const char c : text) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

std::string text_of(const rapidjson::Value& content) {
  if (content.IsString()) return {content.GetString(), content.GetStringLength()};
  std::string out;
  if (content.IsArray())
    for (const auto& part : content.GetArray())
      if (part.IsObject() && part.HasMember("text") && part["text"].IsString()) out += part["text"].GetString();
  return out;
}

void key_text(json_writer& w, const char* key, std::string_view value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

}  // namespace

struct fake_llm_server::state {
  asio::io_context io;
  metrics::registry metrics;
  http::router routes;
  std::unique_ptr<http::http_server> server;
  std::thread thread;
  std::function<fake_reply(std::string_view)> fallback;
  std::function<std::optional<fake_reply>(std::string_view, std::string_view)> route;

  mutable std::mutex mutex;
  std::deque<fake_reply> script;
  std::vector<fake_request> received;
  std::uint64_t next_id = 1;

  std::list<std::weak_ptr<asio::steady_timer>> delays;  // io thread only

  // Runs `fn` on the io thread and waits for it.
  template <class F>
  auto on_io(F fn) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    asio::post(io, [&task] { task(); });
    return result.get();
  }

  asio::awaitable<http::response> handle(http::request& req) {
    fake_request record;
    record.body = req.body;
    record.authorization = std::string(req.header("authorization").value_or(""));
    record.content_type = std::string(req.header("content-type").value_or(""));
    record.received = std::chrono::steady_clock::now();

    rapidjson::Document doc;
    doc.Parse(req.body.data(), req.body.size());
    std::string model = "fake-model";
    std::string last_user;
    std::int64_t prompt_tokens = 0;
    if (!doc.HasParseError() && doc.IsObject()) {
      if (doc.HasMember("model") && doc["model"].IsString()) model = doc["model"].GetString();
      if (doc.HasMember("messages") && doc["messages"].IsArray()) {
        for (const auto& m : doc["messages"].GetArray()) {
          if (!m.IsObject() || !m.HasMember("content")) continue;
          const auto text = text_of(m["content"]);
          prompt_tokens += word_count(text);
          if (m.HasMember("role") && m["role"].IsString() && std::string_view(m["role"].GetString()) == "user")
            last_user = text;
        }
      }
    }

    fake_reply reply;
    std::uint64_t id = 0;
    {
      std::lock_guard lock(mutex);
      received.push_back(std::move(record));
      id = next_id++;
      std::optional<fake_reply> routed;
      if (route) routed = route(received.back().body, last_user);
      if (routed) {
        reply = std::move(*routed);
      } else if (!script.empty()) {
        reply = std::move(script.front());
        script.pop_front();
      } else if (fallback) {
        reply = fallback(last_user);
      } else {
        reply = fake_reply::reply(last_user);
      }
    }
    if (doc.HasParseError() || !doc.IsObject())
      co_return http::response::error(400, "invalid_request_error", "the body is not a JSON object");

    if (reply.delay.count() > 0) {
      auto timer = std::make_shared<asio::steady_timer>(io, reply.delay);
      delays.remove_if([](const auto& weak) { return weak.expired(); });
      delays.push_back(timer);
      boost::system::error_code ignored;  // cancelled when the server shuts down
      co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }

    switch (reply.what) {
      case fake_reply::kind::status: {
        auto res = http::response::json(reply.status, reply.text);
        if (!reply.retry_after.empty()) res.headers.emplace_back("Retry-After", reply.retry_after);
        co_return res;
      }
      case fake_reply::kind::malformed:
        co_return http::response::json(200, reply.text);
      case fake_reply::kind::text:
      case fake_reply::kind::tool_calls:
        break;
    }

    rapidjson::StringBuffer buffer;
    json_writer w(buffer);
    w.StartObject();
    key_text(w, "id", "chatcmpl-fake-" + std::to_string(id));
    key_text(w, "object", "chat.completion");
    w.Key("created");
    w.Int64(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    key_text(w, "model", model);
    w.Key("choices");
    w.StartArray();
    w.StartObject();
    w.Key("index");
    w.Int(0);
    w.Key("message");
    w.StartObject();
    key_text(w, "role", "assistant");
    w.Key("content");
    std::int64_t completion_tokens = 0;
    if (reply.what == fake_reply::kind::text) {
      w.String(reply.text.data(), static_cast<rapidjson::SizeType>(reply.text.size()));
      completion_tokens = word_count(reply.text);
    } else {
      w.Null();
      w.Key("tool_calls");
      w.StartArray();
      for (std::size_t i = 0; i < reply.calls.size(); ++i) {
        w.StartObject();
        key_text(w, "id", "call_" + std::to_string(id) + "_" + std::to_string(i));
        key_text(w, "type", "function");
        w.Key("function");
        w.StartObject();
        key_text(w, "name", reply.calls[i].name);
        key_text(w, "arguments", reply.calls[i].arguments_json);
        w.EndObject();
        w.EndObject();
        completion_tokens += word_count(reply.calls[i].arguments_json);
      }
      w.EndArray();
    }
    w.EndObject();
    key_text(w, "finish_reason", reply.what == fake_reply::kind::text ? "stop" : "tool_calls");
    w.EndObject();
    w.EndArray();
    w.Key("usage");
    w.StartObject();
    w.Key("prompt_tokens");
    w.Int64(prompt_tokens);
    w.Key("completion_tokens");
    w.Int64(completion_tokens);
    w.Key("total_tokens");
    w.Int64(prompt_tokens + completion_tokens);
    w.EndObject();
    w.EndObject();
    co_return http::response::json(200, std::string(buffer.GetString(), buffer.GetSize()));
  }
};

fake_llm_server::fake_llm_server(fake_llm_options options) : state_(std::make_shared<state>()) {
  auto* s = state_.get();
  s->fallback = std::move(options.fallback);
  s->route = std::move(options.route);
  s->routes.add(http::method::post, "/v1/chat/completions",
                http::handler([s](http::request& req) { return s->handle(req); }));
  auto settings = options.server;
  settings.host = "127.0.0.1";
  settings.port = 0;
  s->server = std::make_unique<http::http_server>(s->io, settings, s->routes, s->metrics);
  s->server->listen();
  port_ = s->server->port();
  s->thread = std::thread([s] {
    auto guard = asio::make_work_guard(s->io);
    s->io.run();
  });
}

fake_llm_server::~fake_llm_server() {
  auto* s = state_.get();
  std::promise<void> stopped;
  asio::post(s->io, [s, &stopped] {
    for (auto& weak : s->delays)
      if (auto timer = weak.lock()) timer->cancel();
    asio::co_spawn(s->io, s->server->stop(std::chrono::milliseconds(500)),
                   [&stopped](std::exception_ptr) { stopped.set_value(); });
  });
  stopped.get_future().wait();
  s->io.stop();
  s->thread.join();
}

void fake_llm_server::push(fake_reply reply) {
  std::lock_guard lock(state_->mutex);
  state_->script.push_back(std::move(reply));
}

void fake_llm_server::push(std::vector<fake_reply> replies) {
  std::lock_guard lock(state_->mutex);
  for (auto& r : replies) state_->script.push_back(std::move(r));
}

std::size_t fake_llm_server::script_left() const {
  std::lock_guard lock(state_->mutex);
  return state_->script.size();
}

std::string fake_llm_server::base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

std::vector<fake_request> fake_llm_server::requests() const {
  std::lock_guard lock(state_->mutex);
  return state_->received;
}

std::size_t fake_llm_server::request_count() const {
  std::lock_guard lock(state_->mutex);
  return state_->received.size();
}

bool fake_llm_server::wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (request_count() < n) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::size_t fake_llm_server::open_connections() const {
  auto* s = state_.get();
  return s->on_io([s] { return s->server->connection_count(); });
}

}  // namespace stargazer::test

#pragma once
// A platform adapter of the test suite's own: records every call, can be told to fail.

#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/core/error.hpp"

#include <string>
#include <vector>

namespace stargazer::test {

class recording_adapter final : public platform::platform_adapter {
public:
  struct call {
    std::string kind;  // send, send_file, buttons, typing, stop_typing, reaction, presence, turn_complete
    std::string channel_id;
    std::string text;
    platform::send_context ctx;
  };

  explicit recording_adapter(std::string name = "redis") : name_(std::move(name)) {}

  std::vector<call> calls;
  std::vector<platform::history_message> history;
  int fail_next_sends = 0;  // that many sends fail before succeeding
  int sent_counter = 0;

  std::string_view name() const override { return name_; }
  platform::task<void> start() override { co_return; }
  platform::task<void> stop() override { co_return; }
  bool is_running() const override { return true; }
  platform::bot_identity identity() const override { return {"bot", "Stargazer"}; }

  platform::task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                           const platform::send_context& ctx) override {
    co_return record("send", channel_id, text, ctx);
  }
  platform::task<result<std::string>> send_file(const std::string& channel_id, const std::string& data,
                                                const std::string& filename, const std::string&,
                                                const platform::send_context& ctx) override {
    co_return record("send_file", channel_id, filename + ":" + data, ctx);
  }
  platform::task<result<std::string>> send_with_buttons(const std::string& channel_id, const std::string& text,
                                                        const std::vector<bus::button>& buttons,
                                                        const platform::send_context& ctx) override {
    co_return record("buttons", channel_id, text + "|" + std::to_string(buttons.size()), ctx);
  }
  platform::task<void> start_typing(const std::string& channel_id) override {
    calls.push_back({"typing", channel_id, {}, {}});
    co_return;
  }
  platform::task<void> stop_typing(const std::string& channel_id) override {
    calls.push_back({"stop_typing", channel_id, {}, {}});
    co_return;
  }
  platform::task<bool> add_reaction(const std::string& channel_id, const std::string& message_id,
                                    const std::string& emoji) override {
    calls.push_back({"reaction", channel_id, message_id + ":" + emoji, {}});
    co_return true;
  }
  platform::task<void> set_presence(const std::string& text, const std::string&) override {
    calls.push_back({"presence", {}, text, {}});
    co_return;
  }
  platform::task<std::vector<platform::history_message>> fetch_history(const std::string&, int limit) override {
    auto h = history;
    if (static_cast<int>(h.size()) > limit) h.resize(static_cast<std::size_t>(limit));
    co_return h;
  }
  platform::task<bool> is_channel_valid(const std::string& channel_id) override { co_return channel_id != "invalid"; }
  platform::task<bool> should_skip_channel_heartbeat(const std::string&) override { co_return true; }
  platform::task<void> turn_complete(const std::string& channel_id, const std::string& nonce) override {
    calls.push_back({"turn_complete", channel_id, nonce, {}});
    co_return;
  }

  std::size_t count(const std::string& kind) const {
    std::size_t n = 0;
    for (const auto& c : calls) n += c.kind == kind;
    return n;
  }

private:
  result<std::string> record(const char* kind, const std::string& channel_id, const std::string& text,
                             const platform::send_context& ctx) {
    if (fail_next_sends > 0) {
      --fail_next_sends;
      return make_error_code(errc::not_connected);
    }
    calls.push_back({kind, channel_id, text, ctx});
    return "sent-" + std::to_string(++sent_counter);
  }

  std::string name_;
};

}  // namespace stargazer::test

#pragma once
// The interface every chat platform implements. The
// gateway's outbound consumer dispatches envelopes to it; the worker's proxy adapter
// implements it by publishing onto the bus.

#include "stargazer/bus/envelope.hpp"
#include "stargazer/bus/order_mark.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/result.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <string>
#include <vector>

namespace stargazer::platform {

template <class T>
using task = boost::asio::awaitable<T>;

struct history_message {
  std::string user_id;
  std::string user_name;
  std::string text;
  double timestamp = 0;
  std::string message_id;
  bool is_bot = false;
  std::string reply_to_id;
  std::string reactions;
};

struct bot_identity {
  std::string user_id;
  std::string display_name;
};

// What an outbound envelope carries besides its payload.
struct send_context {
  std::string trace_id;
  std::string response_nonce;
  std::string message_key;
  // The turn's last send: its delivery also completes the turn (docs/protocol.md §3.4).
  bool completes_turn = false;
  // The turn writes state its channel's next turn must see after this send (an unprompted
  // reply's cool-down): the send must not carry the entry's order mark.
  bool state_follows = false;
  // The order mark of the entry being delivered or answered: a send that is one Redis
  // script may write it in that script and set `written` (bus/order_mark.hpp). Null: none.
  bus::order_mark* order_mark = nullptr;
};

class platform_adapter {
public:
  virtual ~platform_adapter() = default;

  virtual std::string_view name() const = 0;
  virtual task<void> start() = 0;
  virtual task<void> stop() = 0;
  virtual bool is_running() const = 0;
  virtual bot_identity identity() const = 0;

  // Each returns the platform's id of the sent message.
  virtual task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                         const send_context& ctx) = 0;
  virtual task<result<std::string>> send_file(const std::string& channel_id, const std::string& data,
                                              const std::string& filename, const std::string& mimetype,
                                              const send_context& ctx) = 0;
  virtual task<result<std::string>> send_with_buttons(const std::string& channel_id, const std::string& text,
                                                      const std::vector<bus::button>& buttons,
                                                      const send_context& ctx) = 0;
  virtual task<void> start_typing(const std::string& channel_id) = 0;
  virtual task<void> stop_typing(const std::string& channel_id) = 0;
  // False when the platform has no reactions.
  virtual task<bool> add_reaction(const std::string& channel_id, const std::string& message_id,
                                  const std::string& emoji) = 0;
  virtual task<void> set_presence(const std::string& text, const std::string& emoji) = 0;
  virtual task<std::vector<history_message>> fetch_history(const std::string& channel_id, int limit) = 0;
  virtual task<bool> is_channel_valid(const std::string& channel_id) = 0;
  virtual task<bool> should_skip_channel_heartbeat(const std::string& channel_id) = 0;

  // Runs a tool pinned to the gateway (the worker's proxy adapter forwards it there as
  // the execute_tool RPC); the tool's result text. Adapters without tools refuse.
  virtual task<result<std::string>> execute_tool(const std::string& channel_id, const std::string& tool_name,
                                                 const std::string& args_json, const std::string& ctx_json) {
    (void)channel_id, (void)tool_name, (void)args_json, (void)ctx_json;
    co_return make_error_code(errc::invalid_argument);
  }

  // True when the platform's sends write the delivery marker (`HSET {message_key}
  // message_id`) themselves, in the same MULTI as the message: the outbound consumer then
  // skips its own marker write (docs/protocol.md §4.5). Platforms that are Redis do.
  virtual bool writes_delivery_marker() const { return false; }
  // True when a send is one Redis script that does nothing for a message key delivered
  // before, writes the marker, and for the turn's last send (send_context::completes_turn)
  // signals turn_complete: the outbound consumer then takes no claim and signals nothing.
  virtual bool delivers_atomically() const { return false; }

  // The last send of a turn went out (C++ addition; ends `?wait=true` on the Redis platform).
  virtual task<void> turn_complete(const std::string& channel_id, const std::string& response_nonce) {
    (void)channel_id;
    (void)response_nonce;
    co_return;
  }
};

}  // namespace stargazer::platform

#pragma once
// The gateway's outbound consumer for one platform: the transport half of delivery.
// It decodes each entry (a malformed one is dead-lettered with its reason), hands RPC
// requests from workers to the handler at once and writes the answer to the caller's
// reply list, and runs everything else per channel in order: completion-marker check and
// SET NX EX claim (idempotent delivery), the handler's delivery, message-id re-sync.
// What a delivery means for a platform is the handler's business (platform/dispatcher.hpp).

#include "stargazer/bus/channel_sequencer.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/stream_consumer.hpp"
#include "stargazer/bus/rpc_reply.hpp"

#include <memory>

namespace stargazer::bus {

struct outbound_consumer_settings {
  consumer_settings consumer;  // stream/group filled from the platform when empty
  sequencer_settings order;    // stream/lock prefix filled likewise
  std::chrono::seconds claim_ttl{300};      // SET NX EX: long enough for any send to finish
  std::chrono::seconds rpc_reply_ttl{60};   // EXPIRE on the reply list: an unread reply goes away
  std::chrono::seconds message_key_ttl{7776000};  // 90 days, as cached messages, on a key the re-sync creates
};

// What the consumer hands decoded envelopes to (one per platform).
class outbound_handler {
public:
  virtual ~outbound_handler() = default;
  // The platform whose stream this is.
  virtual std::string_view platform() const = 0;
  // Answers a worker's RPC (an rpc_request envelope). Exceptions become error replies.
  virtual boost::asio::awaitable<rpc_reply> answer(const outbound_envelope& request) = 0;
  // Delivers any other envelope; for sends, the platform's id of the sent message. `mark`
  // (only for a handler that delivers_atomically): the entry's order mark, which a
  // delivery that is one script may write with it (order_mark.hpp).
  virtual boost::asio::awaitable<result<std::string>> deliver(const outbound_envelope& e, order_mark* mark) = 0;
  // The last send of a turn was delivered (maybe before, by a gateway that died before
  // saying so): a repeated call is harmless, a missing one leaves a `wait=true` caller waiting.
  virtual boost::asio::awaitable<void> turn_complete(const std::string& channel_id,
                                                      const std::string& response_nonce) = 0;
  // True when deliver() writes the message key's delivery marker itself, atomically with
  // the send (then the consumer does not write it again).
  virtual bool writes_delivery_marker() const { return false; }
  // True when deliver() is one Redis script that skips a message key delivered before,
  // writes its marker and, for the turn's last send, signals turn_complete: the consumer
  // then neither claims the key nor signals the turn's end (docs/protocol.md §4.5).
  virtual bool delivers_atomically() const { return false; }
};

class outbound_consumer final : public component {
public:
  outbound_consumer(redis::connection& commands, const redis::connection_settings& blocking, const topology& names,
                    const std::string& consumer_name, outbound_handler& handler,
                    outbound_consumer_settings settings = {}, metrics::registry* metrics = nullptr);
  ~outbound_consumer() override;

  std::string_view name() const override;
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;
  stream_consumer& engine();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// Claim and marker keys (docs/protocol.md §4.5).
inline std::string claim_key(std::string_view message_key) { return "sg:outbound:claim:" + std::string(message_key); }

}  // namespace stargazer::bus

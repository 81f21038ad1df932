#pragma once
// The message the processor answers: an inbound envelope with its types restored, the
// inverse of the gateway's codec. Attachment
// data arrive as raw bytes (or base64 from the Python gateway, decoded by the envelope
// codec), the unix timestamp becomes a time point (now when absent), and the
// platform-specific envelope fields move into `extra` as the adapters build it.

#include "stargazer/bus/envelope.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace stargazer::worker {

struct message_extra {
  std::optional<std::string> guild_id;
  std::string guild_name;
  std::string channel_id_raw;  // the channel id as the platform gave it
  bool is_dm = false;
  std::vector<std::string> member_roles;
  std::int64_t member_count = 0;
  std::map<std::string, std::string> fields;  // the envelope's caller-supplied extra fields
};

struct incoming_message {
  std::string platform;
  std::string channel_id;
  std::string user_id;
  std::string user_name;
  std::string text;
  bool is_addressed = true;
  std::vector<bus::attachment> attachments;
  std::string channel_name;
  std::chrono::system_clock::time_point timestamp;
  std::string message_id;
  std::string reply_to_id;
  message_extra extra;
  std::string reactions;
  std::optional<std::string> unified_user_id;
  std::vector<std::string> user_aliases;
  std::string trace_id;
  std::string response_nonce;  // echoed on the turn-complete signal (ends `wait=true`)
  bool cached = false;         // the gateway stored it in the message cache already

  double unix_time() const { return std::chrono::duration<double>(timestamp.time_since_epoch()).count(); }
};

incoming_message incoming_message_from(const bus::inbound_envelope& e,
                                       std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

}  // namespace stargazer::worker

#pragma once
// The envelopes carried by the streams (docs/protocol.md §3), as plain structs, and
// their msgpack codec. Decoding is defensive: limits are set before unpacking, every
// field is type-checked, unknown fields are ignored, and failures come back as a
// decode_failure naming the reason code and the field, never as a crash.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::bus {

inline constexpr int envelope_version = 1;

struct attachment {
  std::string data;  // raw bytes
  std::string mimetype;
  std::string filename;
  std::string source_url;
};

// In an inbound envelope's member_roles: the adapter found the user to be a platform admin
// (Discord: guild owner, Administrator or Manage Server; Matrix: power level >= 50; Redis
// platform: an admin roster entry). The worker's privileged commands accept it.
inline constexpr std::string_view platform_admin_role = "admin";

// docs/protocol.md §3.2
struct inbound_envelope {
  std::string platform;
  std::string channel_id;
  std::string user_id;
  std::string username;
  std::string content;
  bool is_addressed = true;
  std::vector<attachment> attachments;
  std::string room_name;
  double timestamp = 0;  // unix seconds; 0: unknown
  std::string message_id;
  std::string reply_to;
  std::string reactions;
  std::optional<std::string> unified_user_id;
  std::vector<std::string> user_aliases;
  std::optional<std::string> guild_id;
  std::string guild_name;
  bool is_dm = false;
  std::vector<std::string> member_roles;
  std::int64_t member_count = 0;
  std::string trace_id;
  std::string response_nonce;
  std::map<std::string, std::string> extra;  // caller-supplied string fields
  // The gateway already wrote this message to the message cache exactly as the worker
  // would (Stargazer extension; absent means false, so other producers are unaffected).
  bool cached = false;
};

enum class outbound_type {
  message,
  file,
  buttons,
  typing,
  start_typing,
  stop_typing,
  reaction,
  presence,
  rpc_request,
  turn_complete,
};

std::string_view to_string(outbound_type t);
std::optional<outbound_type> outbound_type_from(std::string_view name);

struct button {
  std::string label;
  std::string id;
  std::string url;
};

// docs/protocol.md §3.3 and §3.4 (one struct; fields used depend on `type`).
struct outbound_envelope {
  outbound_type type = outbound_type::message;
  std::string channel_id;
  std::string message_key;
  std::string trace_id;
  std::string response_nonce;
  std::string text;       // message, buttons, presence
  std::string file_data;  // file: raw bytes
  std::string filename;
  std::string mimetype;
  std::vector<button> buttons;
  std::string message_id;  // reaction
  std::string emoji;       // reaction, presence
  // rpc_request
  std::string rpc_method;
  std::string rpc_args_json = "{}";  // JSON object text
  std::string reply_key;
  std::string request_id;
  double deadline = 0;  // unix seconds; 0: none
  // message/file/buttons: the last send of its turn; the gateway signals turn_complete
  // (with response_nonce) once it is delivered, instead of a separate turn_complete entry.
  bool completes_turn = false;
};

// Whether delivering `e` ends a turn the gateway signals (a send flagged completes_turn
// with a nonce to signal it under).
inline bool ends_turn(const outbound_envelope& e) {
  return e.completes_turn && !e.response_nonce.empty() &&
         (e.type == outbound_type::message || e.type == outbound_type::file || e.type == outbound_type::buttons);
}

// docs/protocol.md §3.5: a tool call delegated to the tools service.
struct tool_request {
  std::string request_id;
  std::string reply_stream;
  std::string tool_name;
  std::string tool_args_json = "{}";             // JSON object text
  std::map<std::string, std::string> tool_ctx;   // platform, channel_id, user_id, user_name, message_id
  double deadline = 0;                           // unix seconds
  std::string trace_id;
};

// docs/protocol.md §3.6: its answer on the worker's reply stream.
struct tool_reply {
  std::string request_id;
  bool ok = false;
  std::string result;  // when ok
  std::string error;   // when not ok
  std::vector<attachment> media;
  std::string trace_id;
};

// Why an entry could not be decoded: a reason code of docs/protocol.md §4.4 and detail.
struct decode_failure {
  std::string code;    // missing_data, decode_error, limit_exceeded, missing_field, bad_field_type, ...
  std::string detail;  // names the field or the problem
  std::string reason() const { return code + ": " + detail; }
};

template <class T>
using decoded = std::variant<T, decode_failure>;

std::string encode(const inbound_envelope& e);
std::string encode(const outbound_envelope& e);
decoded<inbound_envelope> decode_inbound(std::string_view bytes);
decoded<outbound_envelope> decode_outbound(std::string_view bytes);
std::string encode(const tool_request& r);
std::string encode(const tool_reply& r);
decoded<tool_request> decode_tool_request(std::string_view bytes);
decoded<tool_reply> decode_tool_reply(std::string_view bytes);

// Limits applied before unpacking anything read from Redis.
struct decode_limits {
  std::size_t max_bytes = 48 * 1024 * 1024;
  std::size_t max_map = 1000;
  std::size_t max_array = 10000;
  std::size_t max_str = 16 * 1024 * 1024;
  std::size_t max_bin = 32 * 1024 * 1024;
  std::size_t max_depth = 32;
};

}  // namespace stargazer::bus

#pragma once
// The Redis platform: applications embed the bot through instances, each a
// channel with its own API key and an optional closed user roster. Injected messages go
// onto the inbound stream; replies are published on
// `stargazer:redis_platform:response:{instance_id}` (for `?wait=true`), appended to the
// instance's event stream (for SSE with resume) and kept in the message cache (history).
// Keys: docs/protocol.md §5.3-5.7. API keys are stored as SHA-256 digests.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/core/digest.hpp"
#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/platform/quota.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stargazer::redis {
class connection;
class script;
}

namespace stargazer::platform {

struct instance_info {
  std::string instance_id;
  std::string display_name;
  std::string created_at;
  std::map<std::string, std::string> metadata;
};

struct user_info {
  std::string user_id;
  std::string display_name;
  std::string registered_at;
  std::map<std::string, std::string> metadata;
  // A privileged user of the instance (the worker's !mode and !quiet): its messages carry
  // the member role "admin".
  bool admin = false;
};

struct created_instance {
  instance_info info;
  std::string api_key;  // plaintext, returned once
};

struct inject_request {
  std::string text;
  std::string user_id;
  std::string user_name;
  std::string reply_to_id;
  std::vector<bus::attachment> attachments;
  bool is_addressed = true;  // false: context only (the worker's reply policy decides)
  std::string channel_name;  // the envelope's room_name
  std::string message_id;    // the caller's id, unique per instance; empty: generated
  std::map<std::string, std::string> extra;  // string values as given, other JSON values as JSON text
  std::string reactions;
  std::string response_nonce;
  // Set: the message is injected at most once per key (an Idempotency-Key's marker, kept
  // for `once_ttl`); a second inject returns the first message id and publishes nothing.
  std::string once_key;
  std::chrono::seconds once_ttl{86400};
};

// over_quota: stored in the history but not handed to a worker (a quota holds it back).
enum class inject_refusal { none, unknown_instance, user_not_registered, user_name_required, message_id_reused, over_quota };

struct inject_result {
  inject_refusal refusal = inject_refusal::none;
  std::string message_id;
  bool injected_before = false;  // once_key was already used: message_id is the first one's
  quota_decision quota;          // over_quota: which limit, and when it would admit the message
};

// An Idempotency-Key's state when a request claims it (docs/rest-api.md).
struct idempotency_claim {
  enum class state { claimed, in_progress, replay } what = state::claimed;
  unsigned status = 0;  // replay: the first request's answer
  std::string body;
};

// One event of an instance's event stream (the REST API's Server-Sent Events). A send
// that ends its turn is one stream entry with two events: only the second, turn_complete,
// carries the entry's id, so a client resuming from an id never skips the end of a turn.
struct platform_event {
  std::string id;    // the stream entry id, "1700000000000-0"; empty: the entry's next event carries it
  std::string data;  // a JSON object
};

struct stored_file {
  std::string data;
  std::string filename;
  std::string mimetype;
  std::string channel_id;
};

inline std::string response_channel(std::string_view instance_id) {
  return "stargazer:redis_platform:response:" + std::string(instance_id);
}
inline std::string events_stream(std::string_view instance_id) {
  return "redis_platform:events:" + std::string(instance_id);
}
// The message ids an instance has used (zset: id → unix time), so a caller's id is never
// taken twice within the message TTL.
inline std::string message_ids_key(std::string_view instance_id) {
  return "redis_platform:message_ids:" + std::string(instance_id);
}

using stargazer::digest_equals;
using stargazer::sha256_hex;
// ISO 8601 UTC with milliseconds.
std::string iso_time(double unix_seconds);
double now_unix();

class redis_platform final : public platform_adapter {
public:
  redis_platform(redis::connection& conn, bus::event_bus& bus);

  // Registry (docs/protocol.md §5.3).
  task<result<created_instance>> create_instance(std::string instance_id, std::string display_name,
                                                 std::map<std::string, std::string> metadata);
  task<result<std::vector<instance_info>>> list_instances();
  task<result<std::optional<instance_info>>> get_instance(const std::string& instance_id);
  task<result<bool>> update_instance(const std::string& instance_id, const std::optional<std::string>& display_name,
                                     const std::map<std::string, std::string>& metadata);
  // Deletes everything the instance owns in Redis (docs/protocol.md, "What an instance owns").
  task<result<bool>> delete_instance(const std::string& instance_id);
  task<bool> validate_api_key(const std::string& instance_id, const std::string& api_key);
  task<bool> instance_exists(const std::string& instance_id);
  // As the two above, but a Redis that cannot answer (down, or LOADING after a restart) is
  // an error, not "no": the REST API must not tell a client its instance does not exist.
  task<result<bool>> api_key_opens(const std::string& instance_id, const std::string& api_key);
  task<result<bool>> instance_known(const std::string& instance_id);

  task<result<user_info>> register_user(const std::string& instance_id, const std::string& user_id,
                                        const std::string& display_name, const std::map<std::string, std::string>& metadata,
                                        bool admin = false);
  task<result<std::vector<user_info>>> list_users(const std::string& instance_id);
  task<result<std::optional<user_info>>> get_user(const std::string& instance_id, const std::string& user_id);
  task<result<bool>> delete_user(const std::string& instance_id, const std::string& user_id);
  task<bool> user_exists(const std::string& instance_id, const std::string& user_id);
  task<bool> has_users(const std::string& instance_id);

  // Closed roster once any user is registered; open instances need a user name. A caller's
  // message id is claimed atomically (ZADD NX): a reuse is refused, not injected.
  task<result<inject_result>> inject_message(const std::string& instance_id, inject_request req);

  // Quotas checked at the door (docs/operations.md, "Quotas and usage"): a message over a
  // limit is stored in the history and refused (over_quota) instead of published, so the
  // REST API can answer 429. Workers leave this platform's turns to it. Off until set.
  void set_quotas(quotas* checker, quota_settings limits) {
    quotas_ = checker;
    quota_limits_ = limits;
  }

  task<result<std::vector<cached_message>>> history(const std::string& instance_id, std::size_t limit,
                                                    std::optional<double> before);
  task<result<std::optional<stored_file>>> get_file(const std::string& file_id);

  // Idempotency-Key (REST inject). The key's record: "pending" while a request runs (for
  // `pending_ttl`, so a gateway that dies mid-request does not block the key), then the
  // first answer, kept for `ttl`. A failed answer (status >= 300) releases the key so the
  // attempt may be retried.
  // A fresh response nonce: the caller registers its wait under it before injecting.
  static std::string new_response_nonce();

  static std::string idempotency_prefix(const std::string& instance_id);
  static std::string idempotency_key(const std::string& instance_id, std::string_view client_key);
  task<result<idempotency_claim>> claim_idempotency_key(const std::string& key, std::chrono::seconds pending_ttl);
  task<void> finish_idempotency_key(const std::string& key, unsigned status, const std::string& body,
                                    std::chrono::seconds ttl);

  // The instance's event stream: the newest entry's id ("0-0" when empty), and up to
  // `count` entries after `last_id`.
  task<result<std::string>> newest_event_id(const std::string& instance_id);
  task<result<std::vector<platform_event>>> events_after(const std::string& instance_id, const std::string& last_id,
                                                         std::size_t count);

  // platform_adapter
  std::string_view name() const override { return "redis"; }
  task<void> start() override { co_return; }
  task<void> stop() override { co_return; }
  bool is_running() const override { return true; }
  bot_identity identity() const override { return {"star", "Star"}; }
  task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                 const send_context& ctx) override;
  task<result<std::string>> send_file(const std::string& channel_id, const std::string& data,
                                      const std::string& filename, const std::string& mimetype,
                                      const send_context& ctx) override;
  task<result<std::string>> send_with_buttons(const std::string& channel_id, const std::string& text,
                                              const std::vector<bus::button>& buttons, const send_context& ctx) override;
  task<void> start_typing(const std::string&) override { co_return; }
  task<void> stop_typing(const std::string&) override { co_return; }
  task<bool> add_reaction(const std::string&, const std::string&, const std::string&) override { co_return false; }
  task<void> set_presence(const std::string&, const std::string&) override { co_return; }
  task<std::vector<history_message>> fetch_history(const std::string&, int) override {
    co_return std::vector<history_message>{};  // the message cache is the history
  }
  task<bool> is_channel_valid(const std::string& channel_id) override { return instance_exists(channel_id); }
  task<bool> should_skip_channel_heartbeat(const std::string&) override { co_return true; }
  task<void> turn_complete(const std::string& channel_id, const std::string& response_nonce) override;
  bool writes_delivery_marker() const override { return true; }
  bool delivers_atomically() const override { return true; }

  static constexpr std::chrono::seconds file_ttl{86400};
  static constexpr std::chrono::seconds message_ttl = message_cache::ttl;
  // Entries of an instance's event stream: about 1,000 events, as a reply ending its turn
  // is one entry with its turn_complete.
  static constexpr std::size_t events_maxlen = 500;

  // The connection the platform's state lives on (the REST API's identity routes use it).
  redis::connection& connection() const { return conn_; }

private:
  // PUBLISH + XADD to the event stream, in one MULTI.
  task<result<std::string>> emit(const std::string& instance_id, const std::string& json_event);
  // The arguments every send script starts with (redis_platform.cpp, emit_function).
  std::vector<std::string> emit_args(const std::string& instance_id, std::string json_event, const send_context& ctx);
  // Runs a send script (the order set's key appended to `keys`): `id`, or the id the
  // message key was delivered as before. Sets ctx's order mark written when it was.
  task<result<std::string>> run_send(const redis::script& script, std::vector<std::string> keys,
                                     std::vector<std::string> args, std::string id, const send_context& ctx);
  task<std::error_code> delete_per_message_keys(const std::string& instance_id);

  redis::connection& conn_;
  bus::event_bus& bus_;
  quotas* quotas_ = nullptr;
  quota_settings quota_limits_;
  message_cache cache_{conn_};
};

}  // namespace stargazer::platform

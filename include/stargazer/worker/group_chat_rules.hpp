#pragma once
// The pure rules of behaving well in a group chat (docs/architecture.md, "Group chats"):
// who a message is for, the reply policy for the others and its --reply-policy syntax, the
// triage prompt and how its answer is read, the chat commands and who may give them, the
// heartbeat prompt, and the status line the model writes in a <dstatus> tag. No I/O: the
// message processor, the heartbeat and the worker role apply them with the state kept in
// Redis (worker/channel_state.hpp).

#include "stargazer/llm/chat.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/worker/incoming_message.hpp"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::worker {

// ---- Who a message is for ----

// Addressed by its platform (mention, reply to the bot, the bot's name), or a direct
// message. A reaction is context even in a direct message.
bool is_for_bot(const incoming_message& m);

// Platforms whose message cache already holds everything and which have no channels to
// look in on: the Redis platform and the web chat. No backfill and no heartbeat for them.
bool platform_is_local(std::string_view platform);

// ---- The reply policy ----

// What happens to a message not addressed to the bot (addressed ones are always answered).
enum class reply_policy {
  addressed,  // stored for context, never answered
  triage,     // a short model call decides
  always,     // answered
};

std::string_view to_string(reply_policy p);
std::optional<reply_policy> parse_reply_policy(std::string_view name);

// --reply-policy: a default and per-platform overrides, comma-separated:
// "triage", "triage,webchat=always,redis=addressed"; without a default item, triage.
struct reply_policy_spec {
  reply_policy fallback = reply_policy::triage;
  std::map<std::string, reply_policy, std::less<>> per_platform;

  reply_policy for_platform(std::string_view platform) const;
};

// The spec, or what is wrong with `text` (without the flag's name).
std::variant<reply_policy_spec, std::string> parse_reply_policy_spec(std::string_view text);

// A channel's state that decides its unaddressed messages (kept in Redis).
struct channel_gate {
  std::optional<reply_policy> mode;  // set by !mode; nullopt: the platform's policy
  bool quiet = false;                // !quiet in force
  bool cooling_down = false;         // an unprompted reply went out within --unprompted-cooldown
  double forgotten_before = 0;       // !forget: messages at or before this unix time are set aside
};

enum class unaddressed_step { keep_silent, ask_triage, answer };

// What to do with an unaddressed message in a channel whose policy is `policy`.
unaddressed_step step_for_unaddressed(reply_policy policy, const channel_gate& gate);

// ---- Triage ----

// The first words of every triage prompt (the OpenAI-compatible test server recognises
// triage requests by them).
inline constexpr std::string_view triage_prompt_opening = "You decide whether";
// Earlier messages of the channel shown to the triage call.
inline constexpr std::size_t triage_context_messages = 6;

// The triage call for `m`: the channel's last messages (`recent`, oldest first), the new
// message as the last user message, and the question. kind = triage.
llm::request triage_request(std::string_view bot_name, const std::vector<platform::cached_message>& recent,
                            const incoming_message& m, const std::string& model, int max_tokens);

// Yes when the answer starts with the word "yes", case-insensitively (leading spaces,
// quotes and emphasis marks skipped); anything else, an empty answer included, is no.
bool triage_says_yes(std::string_view answer);

// ---- Commands ----

enum class command_name { help, forget, mode, quiet };
std::string_view to_string(command_name n);

struct chat_command {
  command_name name = command_name::help;
  std::string argument;  // the rest of the text, trimmed
};

// `text` as a command: the prefix and a known name, optionally after a mention of the bot
// ("<@123> !mode always", "@Star !help"). Unknown names are not commands (other bots use
// the prefix too): nullopt, and the message is an ordinary one.
std::optional<chat_command> parse_chat_command(std::string_view text, std::string_view prefix,
                                               std::string_view bot_name);

inline constexpr int max_quiet_minutes = 7 * 24 * 60;
// !quiet's argument: whole minutes, 0 (lift) to a week.
std::optional<int> parse_quiet_minutes(std::string_view argument);

// Who may change a channel's behaviour (!mode, !quiet).
struct privilege_settings {
  std::vector<std::string> admin_roles;     // --admin-roles: platform role ids
  std::vector<std::string> webchat_admins;  // --webchat-admins: web chat user ids
};

// Web chat: users listed in --webchat-admins, or signed in with an --admin invite (the
// gateway, never the client, puts bus::platform_admin_role on their messages). Elsewhere:
// member_roles holds bus::platform_admin_role ("admin", which adapters put there for
// platform admins) or a configured role id.
bool is_privileged(const incoming_message& m, const privilege_settings& s);

// What a command does: the reply, and the change to the channel's state (none when refused
// or malformed).
struct command_effect {
  std::string reply;
  std::optional<reply_policy> set_mode;
  std::optional<int> quiet_minutes;  // 0: lift the quiet
  bool forget = false;
};

// `current` is the channel's policy now (its mode, else the platform's).
command_effect plan_command(const chat_command& c, bool privileged, std::string_view prefix,
                            reply_policy current);

// ---- Heartbeat ----

inline constexpr std::string_view heartbeat_prompt_opening = "It has been quiet";

// The last (system) message of a heartbeat turn: say something useful, or nothing.
std::string heartbeat_instruction(std::string_view bot_name);

// The message to send for a heartbeat reply; nullopt when the model chose to say nothing
// (an empty reply, or one that only says "nothing").
std::optional<std::string> heartbeat_message(std::string_view model_reply);

// ---- Presence ----

struct status_line {
  std::string emoji;  // may be empty
  std::string text;
};

inline constexpr std::size_t max_status_characters = 128;
inline constexpr std::string_view status_prompt_opening = "Write a short status line";

// The status call: kind = status, a small token cap.
llm::request status_request(std::string_view bot_name, const std::string& model);

// The status in the first <dstatus>emoji text</dstatus> of `reply`: whitespace collapsed,
// a leading emoji split off; nullopt when the tag is missing, empty, longer than
// max_status_characters (code points) or not valid UTF-8.
std::optional<status_line> extract_dstatus(std::string_view reply);

// --presence-text with {bot_name} replaced, and the 💬 emoji.
status_line fallback_status(std::string_view presence_text, std::string_view bot_name);

// Code points in `text`, or nullopt when it is not valid UTF-8.
std::optional<std::size_t> utf8_length(std::string_view text);

}  // namespace stargazer::worker

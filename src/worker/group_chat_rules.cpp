#include "stargazer/worker/group_chat_rules.hpp"

#include "stargazer/core/strings.hpp"
#include "stargazer/worker/prompt.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace stargazer::worker {

namespace {

constexpr std::string_view spaces = " \t\r\n\f\v";

std::string_view trim(std::string_view s, std::string_view chars = spaces) {
  const auto first = s.find_first_not_of(chars);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(chars) - first + 1);
}

bool is_space(char c) { return spaces.find(c) != std::string_view::npos; }

bool is_ascii_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// At most `max_bytes` of `text`, cut at a UTF-8 character boundary, with "…" when cut.
std::string shortened(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  return std::string(utf8_prefix(text, max_bytes)) + "…";
}

}  // namespace

// ---- Who a message is for ----

bool is_for_bot(const incoming_message& m) { return m.is_addressed || (m.extra.is_dm && m.reactions.empty()); }

bool platform_is_local(std::string_view platform) { return platform == "redis" || platform == "webchat"; }

// ---- The reply policy ----

std::string_view to_string(reply_policy p) {
  switch (p) {
    case reply_policy::addressed: return "addressed";
    case reply_policy::triage: return "triage";
    case reply_policy::always: return "always";
  }
  return "triage";
}

std::optional<reply_policy> parse_reply_policy(std::string_view name) {
  const auto n = ascii_lower(trim(name));
  if (n == "addressed") return reply_policy::addressed;
  if (n == "triage") return reply_policy::triage;
  if (n == "always") return reply_policy::always;
  return std::nullopt;
}

reply_policy reply_policy_spec::for_platform(std::string_view platform) const {
  const auto it = per_platform.find(platform);
  return it != per_platform.end() ? it->second : fallback;
}

std::variant<reply_policy_spec, std::string> parse_reply_policy_spec(std::string_view text) {
  reply_policy_spec spec;
  bool has_default = false;
  if (trim(text).empty()) return std::string("empty (expected addressed, triage or always)");
  std::size_t at = 0;
  while (at <= text.size()) {
    auto comma = text.find(',', at);
    if (comma == std::string_view::npos) comma = text.size();
    const auto item = trim(text.substr(at, comma - at));
    at = comma + 1;
    if (item.empty()) return std::string("an empty item (two commas, or a comma at an end)");
    const auto equals = item.find('=');
    const auto policy_name = equals == std::string_view::npos ? item : trim(item.substr(equals + 1));
    const auto policy = parse_reply_policy(policy_name);
    if (!policy)
      return fmt::format("'{}' is not a policy (expected addressed, triage or always)",
                         std::string(policy_name));
    if (equals == std::string_view::npos) {
      if (has_default)
        return fmt::format("two defaults ('{}' and '{}')", to_string(spec.fallback), to_string(*policy));
      spec.fallback = *policy;
      has_default = true;
      continue;
    }
    const auto platform = ascii_lower(trim(item.substr(0, equals)));
    const auto name_char = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'; };
    const bool valid_name =
        !platform.empty() && platform.size() <= 32 && std::all_of(platform.begin(), platform.end(), name_char);
    if (!valid_name) return fmt::format("'{}' is not a platform name", std::string(item.substr(0, equals)));
    if (!spec.per_platform.emplace(platform, *policy).second)
      return fmt::format("platform '{}' is given twice", platform);
  }
  return spec;
}

unaddressed_step step_for_unaddressed(reply_policy policy, const channel_gate& gate) {
  const auto effective = gate.mode.value_or(policy);
  if (effective == reply_policy::addressed || gate.quiet || gate.cooling_down)
    return unaddressed_step::keep_silent;
  return effective == reply_policy::always ? unaddressed_step::answer : unaddressed_step::ask_triage;
}

// ---- Triage ----

llm::request triage_request(std::string_view bot_name, const std::vector<platform::cached_message>& recent,
                            const incoming_message& m, const std::string& model, int max_tokens) {
  constexpr std::size_t line_bytes = 300;  // a long message's gist is enough to decide
  std::string transcript;
  const auto from = recent.size() > triage_context_messages ? recent.size() - triage_context_messages : 0;
  for (std::size_t i = from; i < recent.size(); ++i) {
    const auto& h = recent[i];
    const std::string name = h.is_bot ? std::string(bot_name) : h.user_name.empty() ? "someone" : h.user_name;
    transcript += fmt::format("{}: {}\n", name, shortened(h.text, line_bytes));
  }
  if (transcript.empty()) transcript = "(none)\n";

  llm::request req;
  req.kind = llm::request_kind::triage;
  req.bot_name = std::string(bot_name);
  req.model = model;
  req.max_tokens = max_tokens;
  req.temperature = 0.0;
  req.trace_id = m.trace_id;
  req.messages.push_back(
      {llm::role::system,
       fmt::format("{0} {1} should speak in a group chat where people do not always address {1} by "
                   "name. {1} should reply when the newest message asks {1} something, continues a "
                   "conversation with {1}, or clearly invites an answer {1} can give; not when people are "
                   "talking among themselves.\n\nRecent messages, oldest first:\n{2}",
                   triage_prompt_opening, bot_name, transcript)});
  req.messages.push_back({llm::role::user, shortened(m.text, 2000), m.user_name});
  req.messages.push_back(
      {llm::role::system, fmt::format("Should {} reply to that newest message? Answer yes or no.", bot_name)});
  return req;
}

bool triage_says_yes(std::string_view answer) {
  const auto start = answer.find_first_not_of(" \t\r\n\"'*_`>");
  if (start == std::string_view::npos) return false;
  const auto word = answer.substr(start);
  return word.size() >= 3 && iequals(word.substr(0, 3), "yes") &&
         (word.size() == 3 || !is_ascii_word_char(word[3]));
}

// ---- Commands ----

std::string_view to_string(command_name n) {
  switch (n) {
    case command_name::help: return "help";
    case command_name::forget: return "forget";
    case command_name::mode: return "mode";
    case command_name::quiet: return "quiet";
  }
  return "help";
}

std::optional<chat_command> parse_chat_command(std::string_view text, std::string_view prefix,
                                               std::string_view bot_name) {
  if (prefix.empty()) return std::nullopt;
  auto rest = trim(text);
  // A leading mention of the bot: Discord's <@id> / <@!id>, or @Name; then maybe ':' or ','.
  bool mentioned = false;
  if (rest.starts_with("<@")) {
    const auto close = rest.find('>');
    mentioned = close != std::string_view::npos;
    if (mentioned) rest = rest.substr(close + 1);
  } else if (rest.starts_with('@') && !bot_name.empty() && rest.size() > bot_name.size() &&
             iequals(rest.substr(1, bot_name.size()), bot_name)) {
    mentioned = true;
    rest = rest.substr(1 + bot_name.size());
  }
  if (mentioned) {
    if (!rest.empty() && (rest.front() == ':' || rest.front() == ',')) rest.remove_prefix(1);
    rest = trim(rest);
  }
  if (!rest.starts_with(prefix)) return std::nullopt;
  rest.remove_prefix(prefix.size());
  std::size_t end = 0;
  while (end < rest.size() && !is_space(rest[end])) ++end;
  const auto name = ascii_lower(rest.substr(0, end));
  for (const auto n : {command_name::help, command_name::forget, command_name::mode, command_name::quiet})
    if (name == to_string(n)) return chat_command{n, std::string(trim(rest.substr(end)))};
  return std::nullopt;  // another bot's command, or none
}

std::optional<int> parse_quiet_minutes(std::string_view argument) {
  auto a = trim(argument);
  if (a.ends_with("m")) a = trim(a.substr(0, a.size() - 1));  // "30m"
  int minutes = -1;
  const auto [ptr, ec] = std::from_chars(a.data(), a.data() + a.size(), minutes);
  const bool whole = !a.empty() && ec == std::errc{} && ptr == a.data() + a.size();
  if (!whole || minutes < 0 || minutes > max_quiet_minutes) return std::nullopt;
  return minutes;
}

bool is_privileged(const incoming_message& m, const privilege_settings& s) {
  const auto listed = [](const std::vector<std::string>& list, const std::string& v) {
    return !v.empty() && std::find(list.begin(), list.end(), v) != list.end();
  };
  if (m.platform == "webchat" && listed(s.webchat_admins, m.user_id)) return true;
  for (const auto& role : m.extra.member_roles)
    if (role == bus::platform_admin_role || (m.platform != "webchat" && listed(s.admin_roles, role))) return true;
  return false;
}

command_effect plan_command(const chat_command& c, bool privileged, std::string_view prefix,
                            reply_policy current) {
  command_effect e;
  const auto refuse = [&](std::string_view name) {
    e.reply = fmt::format("Sorry, only admins of this channel can use {}{}.", prefix, name);
  };
  switch (c.name) {
    case command_name::help:
      e.reply = fmt::format(
          "Commands: {0}help (this list); {0}forget (I set aside what was said here before and start "
          "fresh); {0}mode always|addressed|triage (whether I answer messages not addressed to me: always, "
          "never, or when I judge it useful; admins); {0}quiet <minutes> (I answer only when addressed and "
          "do not look in on this channel for that long, 0 lifts it; admins). This channel's mode: {1}.",
          prefix, to_string(current));
      break;
    case command_name::forget:
      e.forget = true;
      e.reply =
          "Done: I have set aside what was said here before. Our conversation in this channel starts fresh.";
      break;
    case command_name::mode: {
      if (c.argument.empty()) {
        e.reply = fmt::format("This channel's mode is {}. Admins can change it with {}mode "
                              "always|addressed|triage.",
                              to_string(current), prefix);
        break;
      }
      if (!privileged) {
        refuse("mode");
        break;
      }
      const auto policy = parse_reply_policy(c.argument);
      if (!policy) {
        e.reply = fmt::format("Sorry, I don't know that mode. Usage: {}mode always|addressed|triage.", prefix);
        break;
      }
      e.set_mode = *policy;
      switch (*policy) {
        case reply_policy::always:
          e.reply = "Mode set to always: I answer every message in this channel.";
          break;
        case reply_policy::addressed:
          e.reply = "Mode set to addressed: I answer only messages addressed to me in this channel.";
          break;
        case reply_policy::triage:
          e.reply = "Mode set to triage: I answer messages addressed to me, and others when I judge it useful.";
          break;
      }
      break;
    }
    case command_name::quiet: {
      if (!privileged) {
        refuse("quiet");
        break;
      }
      const auto minutes = parse_quiet_minutes(c.argument);
      if (!minutes) {
        e.reply = fmt::format("Sorry, I need a number of minutes from 0 to {}. Usage: {}quiet <minutes>.",
                              max_quiet_minutes, prefix);
        break;
      }
      e.quiet_minutes = *minutes;
      if (*minutes == 0) e.reply = "Quiet lifted: I am back to this channel's usual mode.";
      else
        e.reply = fmt::format("I'll keep quiet here for {} minute{}: I answer only when addressed.", *minutes,
                              *minutes == 1 ? "" : "s");
      break;
    }
  }
  return e;
}

// ---- Heartbeat ----

std::string heartbeat_instruction(std::string_view bot_name) {
  return fmt::format(
      "{0} in this channel for a while. If {1} has something genuinely useful, kind or interesting to "
      "add (a follow-up on an earlier topic, an answer still owed, a relevant thought), write that one "
      "message now, as {1}. If not, answer with nothing at all: an empty reply, and nobody sees anything.",
      heartbeat_prompt_opening, bot_name);
}

std::optional<std::string> heartbeat_message(std::string_view model_reply) {
  const auto text = trim(model_reply);
  const auto bare = trim(text, " \t\r\n\f\v()[]<>{}/.!\"'*_`");
  if (bare.empty() || iequals(bare, "nothing") || iequals(bare, "nothing to say")) return std::nullopt;
  return std::string(text);
}

// ---- Presence ----

llm::request status_request(std::string_view bot_name, const std::string& model) {
  llm::request req;
  req.kind = llm::request_kind::status;
  req.bot_name = std::string(bot_name);
  req.model = model;
  req.max_tokens = 60;
  req.messages.push_back(
      {llm::role::system,
       fmt::format("{0} for {1}'s profile on chat platforms: one emoji, then a few words on what {1} is up "
                   "to or in the mood for, at most 100 characters. Answer with the status inside a tag and "
                   "nothing else, like <dstatus>🌙 reading old star charts</dstatus>.",
                   status_prompt_opening, bot_name)});
  req.messages.push_back({llm::role::user, "Your status, please."});
  return req;
}

std::optional<std::size_t> utf8_length(std::string_view text) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++count) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const std::size_t n = lead < 0x80             ? 1
                          : (lead >> 5) == 0x6  ? 2
                          : (lead >> 4) == 0xE  ? 3
                          : (lead >> 3) == 0x1E ? 4
                                                : 0;
    const bool overlong_or_too_big = (n == 2 && lead < 0xC2) || (n == 4 && lead > 0xF4);
    if (n == 0 || i + n > text.size() || overlong_or_too_big) return std::nullopt;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return std::nullopt;
    i += n;
  }
  return count;
}

std::optional<status_line> extract_dstatus(std::string_view reply) {
  constexpr std::string_view open = "<dstatus>", close = "</dstatus>";
  const auto lower = ascii_lower(reply);  // tags in any case; ASCII lowering keeps byte offsets
  const auto start = lower.find(open);
  if (start == std::string::npos) return std::nullopt;
  const auto end = lower.find(close, start + open.size());
  if (end == std::string::npos) return std::nullopt;
  const auto inner = reply.substr(start + open.size(), end - start - open.size());

  std::string content;  // whitespace runs (newlines included) become one space; other controls go
  for (const char c : trim(inner)) {
    if (is_space(c)) {
      if (!content.empty() && content.back() != ' ') content.push_back(' ');
    } else if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) {
      content.push_back(c);
    }
  }
  const auto length = utf8_length(content);
  if (content.empty() || !length || *length > max_status_characters) return std::nullopt;

  status_line line;
  const auto space = content.find(' ');
  const auto first = std::string_view(content).substr(0, space);
  // A leading emoji: a short non-ASCII token with no letters or digits of ASCII.
  const bool emoji = space != std::string::npos && static_cast<unsigned char>(first[0]) >= 0x80 &&
                     first.size() <= 32 && std::none_of(first.begin(), first.end(), is_ascii_word_char);
  if (emoji) {
    line.emoji = std::string(first);
    line.text = content.substr(space + 1);
  } else {
    line.text = std::move(content);
  }
  return line;
}

status_line fallback_status(std::string_view presence_text, std::string_view bot_name) {
  return {"💬", render_prompt(presence_text, {{"bot_name", std::string(bot_name)}})};
}

}  // namespace stargazer::worker

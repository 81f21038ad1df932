#pragma once
// The system prompt: a template with {variables}, from --system-prompt-file or built in.
// Known variables: bot_name, platform, channel, participants, tools, current_time, extra.
// Unknown `{words}` and lone braces are left as written, so JSON or code in a prompt
// survives. A line whose variables all render empty is left out, so a line about
// optional context ("Details sent with it: {extra}") needs no conditional.

#include "stargazer/worker/incoming_message.hpp"

#include <map>
#include <string>
#include <string_view>

namespace stargazer::worker {

extern const std::string_view default_system_prompt;

std::string render_prompt(std::string_view tmpl, const std::map<std::string, std::string, std::less<>>& variables);

// {extra}: the message's caller-supplied fields (the envelope's `extra`; non-string JSON
// values arrive as their JSON text) on one line, "key: value; key: value" in key order,
// control characters as spaces; "" when there are none.
std::string render_extra(const std::map<std::string, std::string>& fields);

// The sender as the user's line names them: the display name, and when the worker resolved
// a unified identity, the person's id and other accounts, so one person reads as one
// across platforms: "Ada (person 7f3a, also discord:123, matrix:@ada:example.org)".
// Just the display name (or the user id when it has none) otherwise.
std::string sender_label(const incoming_message& m);

}  // namespace stargazer::worker

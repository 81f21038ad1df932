#pragma once
// The system prompt: a template with {variables}, from --system-prompt-file or built in.
// Known variables: bot_name, platform, channel, participants, tools, current_time.
// Unknown `{words}` and lone braces are left as written, so JSON or code in a prompt
// survives.

#include <map>
#include <string>
#include <string_view>

namespace stargazer::worker {

extern const std::string_view default_system_prompt;

std::string render_prompt(std::string_view tmpl, const std::map<std::string, std::string, std::less<>>& variables);

}  // namespace stargazer::worker

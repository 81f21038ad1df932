#include "stargazer/worker/prompt.hpp"

namespace stargazer::worker {

const std::string_view default_system_prompt =
    "You are {bot_name}, a friendly and capable assistant chatting on {platform} in {channel}.\n"
    "People here: {participants}.\n"
    "The current time is {current_time}.\n"
    "Tools you can call: {tools}.\n"
    "Messages from people are prefixed with their name. Answer the latest message, briefly and "
    "plainly, in the language it was written in. Do not prefix your own replies with your name.";

std::string render_prompt(std::string_view tmpl, const std::map<std::string, std::string, std::less<>>& variables) {
  std::string out;
  out.reserve(tmpl.size() + 256);
  std::size_t i = 0;
  while (i < tmpl.size()) {
    const auto open = tmpl.find('{', i);
    if (open == std::string_view::npos) break;
    const auto close = tmpl.find('}', open + 1);
    if (close == std::string_view::npos) break;
    out.append(tmpl, i, open - i);
    const auto name = tmpl.substr(open + 1, close - open - 1);
    if (const auto it = variables.find(name); it != variables.end()) {
      out += it->second;
      i = close + 1;
    } else {
      out.push_back('{');  // not a variable: keep it, and look for one right after the brace
      i = open + 1;
    }
  }
  out.append(tmpl.substr(i));
  return out;
}

}  // namespace stargazer::worker

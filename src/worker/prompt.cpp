#include "stargazer/worker/prompt.hpp"

namespace stargazer::worker {

const std::string_view default_system_prompt =
    "You are {bot_name}, a friendly and capable assistant chatting on {platform} in {channel}.\n"
    "People here: {participants}.\n"
    "The current time is {current_time}.\n"
    "Tools you can call: {tools}.\n"
    "Details the sender attached to the latest message: {extra}.\n"
    "Messages from people are prefixed with their name. Answer the latest message, briefly and "
    "plainly, in the language it was written in. Do not prefix your own replies with your name.";

namespace {

// One line of the template, rendered; `used` and `filled` count its known variables and
// those that rendered non-empty.
std::string render_line(std::string_view line, const std::map<std::string, std::string, std::less<>>& variables,
                        int& used, int& filled) {
  std::string out;
  out.reserve(line.size() + 64);
  std::size_t i = 0;
  while (i < line.size()) {
    const auto open = line.find('{', i);
    if (open == std::string_view::npos) break;
    const auto close = line.find('}', open + 1);
    if (close == std::string_view::npos) break;
    out.append(line, i, open - i);
    const auto name = line.substr(open + 1, close - open - 1);
    if (const auto it = variables.find(name); it != variables.end()) {
      out += it->second;
      ++used;
      if (!it->second.empty()) ++filled;
      i = close + 1;
    } else {
      out.push_back('{');  // not a variable: keep it, and look for one right after the brace
      i = open + 1;
    }
  }
  out.append(line.substr(i));
  return out;
}

std::string one_line(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = ' ';
  return out;
}

}  // namespace

std::string render_prompt(std::string_view tmpl, const std::map<std::string, std::string, std::less<>>& variables) {
  std::string out;
  out.reserve(tmpl.size() + 256);
  std::size_t start = 0;
  while (start <= tmpl.size()) {
    const auto newline = tmpl.find('\n', start);
    const auto end = newline == std::string_view::npos ? tmpl.size() : newline;
    int used = 0, filled = 0;
    auto line = render_line(tmpl.substr(start, end - start), variables, used, filled);
    if (used == 0 || filled > 0) {
      out += line;
      if (newline != std::string_view::npos) out.push_back('\n');
    }
    if (newline == std::string_view::npos) break;
    start = newline + 1;
  }
  return out;
}

std::string render_extra(const std::map<std::string, std::string>& fields) {
  std::string out;
  for (const auto& [key, value] : fields) {
    if (!out.empty()) out += "; ";
    out += one_line(key) + ": " + one_line(value);
  }
  return out;
}

std::string sender_label(const incoming_message& m) {
  std::string label = m.user_name.empty() ? m.user_id : m.user_name;
  if (!m.unified_user_id || m.unified_user_id->empty()) return label;
  label += " (person " + *m.unified_user_id;
  const auto self = m.platform + ":" + m.user_id;
  bool first = true;
  for (const auto& alias : m.user_aliases) {
    if (alias == self) continue;
    label += first ? ", also " : ", ";
    label += alias;
    first = false;
  }
  return label + ")";
}

}  // namespace stargazer::worker

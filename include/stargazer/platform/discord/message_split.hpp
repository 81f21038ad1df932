#pragma once
// Splitting a reply into Discord messages (at most 2,000 characters each): at a paragraph
// break if one fits, else a line break, else a sentence end, else a space, else anywhere
// between two characters. A part never ends inside a code block: the fence is closed at
// the end of the part and reopened (with its language) at the start of the next.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::platform::discord {

// Discord counts characters (Unicode code points), not bytes.
inline constexpr std::size_t max_message_chars = 2000;

std::size_t count_chars(std::string_view utf8);

// Parts in order; none is empty, each at most `limit` characters (`limit` >= 32).
std::vector<std::string> split_message(std::string_view text, std::size_t limit = max_message_chars);

}  // namespace stargazer::platform::discord

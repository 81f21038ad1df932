#pragma once
// UTF-8 validity (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF),
// for text that must be JSON strings: model output, platform events, chat messages.

#include <cstddef>
#include <string>
#include <string_view>

namespace stargazer::utf8 {

// The length of the valid sequence at the start of `s`; 0 when it starts none (or is empty).
std::size_t sequence_length(std::string_view s);

bool is_valid(std::string_view s);

// `s` with every byte that starts no valid sequence replaced by U+FFFD (text cut
// mid-character stays readable and becomes valid JSON).
std::string repaired(std::string_view s);

}  // namespace stargazer::utf8

#include "stargazer/redis/reply.hpp"

#include <fmt/format.h>

#include <charconv>

namespace stargazer::redis {

std::string_view reply::error_code() const {
  if (!is_error()) return {};
  const std::string_view text = text_;
  return text.substr(0, text.find(' '));
}

std::optional<long long> reply::to_integer() const {
  if (is_integer()) return integer_;
  if (is_bulk() || is_status()) {
    long long v = 0;
    const auto [ptr, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
    if (ec == std::errc{} && ptr == text_.data() + text_.size()) return v;
  }
  return std::nullopt;
}

std::string reply::debug_string() const {
  switch (kind_) {
    case kind::status: return "+" + text_;
    case kind::error: return "-" + text_;
    case kind::integer: return fmt::format(":{}", integer_);
    case kind::bulk: return fmt::format("\"{}\"", text_.size() > 64 ? text_.substr(0, 64) + "..." : text_);
    case kind::nil: return "(nil)";
    case kind::array: {
      std::string out = "[";
      for (std::size_t i = 0; i < elements_.size(); ++i) {
        if (i != 0) out += ", ";
        out += elements_[i].debug_string();
      }
      return out + "]";
    }
  }
  return "?";
}

}  // namespace stargazer::redis

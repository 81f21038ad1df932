#include "stargazer/http/sse.hpp"

#include <charconv>
#include <cstdint>

namespace stargazer::http {

std::vector<sse_event> sse_parser::feed(std::string_view bytes) {
  std::vector<sse_event> out;
  if (failed_) return out;
  if (!started_) {
    // The byte order mark may itself arrive in pieces: wait until three bytes are known.
    partial_.append(bytes);
    constexpr std::string_view bom = "\xEF\xBB\xBF";
    if (partial_.size() < bom.size() && bom.starts_with(partial_)) return out;
    started_ = true;
    std::string pending = std::move(partial_);
    partial_.clear();
    std::string_view rest = pending;
    if (rest.starts_with(bom)) rest.remove_prefix(bom.size());
    return feed(rest);
  }
  std::size_t start = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (skip_lf_) {
      skip_lf_ = false;
      if (c == '\n') {
        start = i + 1;
        continue;
      }
    }
    if (c != '\n' && c != '\r') continue;
    if (partial_.empty()) {
      line(bytes.substr(start, i - start), out);
    } else {
      partial_.append(bytes.substr(start, i - start));
      line(partial_, out);
      partial_.clear();
    }
    if (failed_) return out;
    skip_lf_ = c == '\r';
    start = i + 1;
  }
  partial_.append(bytes.substr(start));
  if (partial_.size() + data_.size() > max_) failed_ = true;
  return out;
}

void sse_parser::line(std::string_view l, std::vector<sse_event>& out) {
  if (l.empty()) {
    last_id_ = id_buffer_;  // only a complete event moves the resume point
    if (has_data_) {
      sse_event e;
      if (!type_.empty()) e.type = std::move(type_);
      e.data = std::move(data_);
      e.id = last_id_;
      out.push_back(std::move(e));
    }
    data_.clear();
    type_.clear();
    has_data_ = false;
    return;
  }
  if (l.front() == ':') return;  // a comment
  const auto colon = l.find(':');
  const auto field = l.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = l.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
    if (data_.size() > max_) failed_ = true;
  } else if (field == "event") {
    type_ = std::string(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) id_buffer_ = std::string(value);
  } else if (field == "retry") {
    unsigned long long ms = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
    if (!value.empty() && ec == std::errc{} && ptr == value.data() + value.size())
      retry_ = std::chrono::milliseconds(static_cast<std::int64_t>(ms));
  }
}

}  // namespace stargazer::http

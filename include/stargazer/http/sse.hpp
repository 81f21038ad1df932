#pragma once
// A sans-io parser of Server-Sent Events streams (the WHATWG HTML "event stream"
// format): feed it the body as it arrives, in pieces of any size, and it returns the
// events they complete. Used by clients of `GET .../events` (docs/rest-api.md).
//
// Rules followed: lines end with CRLF, LF or CR (also split across pieces); a leading
// byte order mark is skipped; `:` starts a comment (heartbeats); `field: value` drops one
// space after the colon; `data` lines are joined with "\n"; `event` sets the type
// (default "message"); `id` sets the last event id once its event ends (a resume point is
// never an event only half received); it persists across events and is what a client
// sends back as `Last-Event-ID`; `retry` (digits only) is the reconnection
// delay; an empty line dispatches the event, unless it has no data. Unknown fields are
// ignored.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::http {

struct sse_event {
  std::string type = "message";
  std::string data;
  std::string id;  // the last event id when the event was dispatched ("" if none yet)
};

class sse_parser {
public:
  // A line or an event longer than `max_event_bytes` fails the stream (failed() turns
  // true and nothing more is parsed): a peer cannot grow the buffer without bound.
  explicit sse_parser(std::size_t max_event_bytes = 1024 * 1024) : max_(max_event_bytes) {}

  // Parses `bytes` and returns the events they complete, in order.
  std::vector<sse_event> feed(std::string_view bytes);

  const std::string& last_event_id() const { return last_id_; }
  std::optional<std::chrono::milliseconds> retry() const { return retry_; }
  bool failed() const { return failed_; }

private:
  void line(std::string_view l, std::vector<sse_event>& out);

  std::size_t max_;
  std::string partial_;  // bytes of the current, unterminated line
  std::string data_;
  std::string type_;
  bool has_data_ = false;
  std::string id_buffer_;  // set by `id` lines, becomes last_id_ when the event ends
  std::string last_id_;
  std::optional<std::chrono::milliseconds> retry_;
  bool skip_lf_ = false;  // the previous piece ended with CR: a leading LF belongs to it
  bool started_ = false;  // past the optional byte order mark
  bool failed_ = false;
};

}  // namespace stargazer::http

#pragma once
// Private: the request queue of a redis::connection, sans-io. No sockets, no Asio, no
// clock of its own: the connection feeds it events (a request was queued, the writer
// takes what to write, the write succeeded, a reply arrived, time passed, the link came
// up or went down, stop) and it tells each request once how it ended through the
// request's completion callback. Unit-tested by feeding it replies and failures.
//
// A request is waiting (queued, not written), then in flight (handed to the writer and
// awaiting replies, in write order), then done. Replies complete the head of the
// in-flight queue in order. A request that expects no replies (subscriber mode) is
// never in flight: it completes when its write succeeds.
//
// Completion callbacks run inside the queue's member functions and must not call back
// into the queue (the connection's only cancels a timer, whose handler runs later).

#include "stargazer/redis/reply.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace stargazer::redis::detail {

// Pub/Sub traffic on a subscribed connection: `message`, `pmessage` and the
// (p)(un)subscribe confirmations are arrays that answer no request.
bool is_push_message(const reply& r);

class request_queue {
  struct entry;

public:
  using clock_type = std::chrono::steady_clock;
  // Called exactly once per request: an empty error code with one reply per command
  // (none for a request that expects no replies), or the failure and no replies.
  using completion = std::function<void(std::error_code ec, std::vector<reply> replies)>;

  static constexpr std::size_t max_batch = 4096;  // requests per write

  struct item {
    std::string payload;        // encoded commands; empty: completes at once, successfully
    std::size_t expected = 0;   // replies to wait for; 0: complete once written
    clock_type::time_point deadline = clock_type::time_point::max();
    bool retry_if_sent = false;         // back to waiting when the link drops after the write
    bool fail_if_disconnected = false;  // errc::not_connected instead of waiting for a link
    // The connection's handshake (AUTH, SELECT, ...): queued first, the only thing written
    // before handshake_done(), never expired while waiting, failed with the connection's
    // error when the link drops.
    bool setup = false;
    bool ahead = false;  // queued before everything waiting (connect-time commands)
    completion on_complete;
  };

  // Requests taken for one write, in order. Owns them while the write runs: the payloads
  // stay valid even if the link drops (and the queue forgets them) meanwhile.
  class write_batch {
  public:
    write_batch();
    ~write_batch();
    write_batch(write_batch&&) noexcept;
    write_batch& operator=(write_batch&&) noexcept;

    bool empty() const { return entries_.empty(); }
    std::size_t size() const { return entries_.size(); }
    // The bytes of the i-th request.
    const std::string& payload(std::size_t i) const;

  private:
    friend class request_queue;
    std::vector<std::shared_ptr<entry>> entries_;
  };

  enum class reply_disposition {
    matched,      // went to the head of the in-flight queue (which completes on its last reply)
    absorbed,     // the late reply of an abandoned (timed-out) request: discarded
    push,         // a push message (push mode only): not consumed, the caller delivers it
    unsolicited,  // answers nothing in flight: a protocol error, the caller drops the link
  };

  request_queue();
  ~request_queue();
  request_queue(const request_queue&) = delete;
  request_queue& operator=(const request_queue&) = delete;

  // Queues a request. Completes it at once (and returns false) when the queue is stopped
  // (errc::shutting_down), its payload is empty (success) or it is fail_if_disconnected
  // and the link is not ready (errc::not_connected). True: queued, wake the writer.
  bool enqueue(item it);

  // Takes every writable waiting request, up to max_requests: only setup requests until
  // handshake_done(), nothing while the link is down. Those expecting replies are in
  // flight from now on, because replies can arrive before the write completes.
  write_batch take_writable(std::size_t max_requests = max_batch);
  // The batch was written: requests expecting no replies complete; payloads that will
  // never be resent are freed. Not to be called when the write failed or the link
  // dropped meanwhile.
  void written(write_batch&& batch);

  // One reply from the server. `r` is moved from when matched or absorbed, and left as it
  // was for push and unsolicited.
  reply_disposition on_reply(reply& r);
  // Push mode (a push handler is set): push messages are told apart from replies.
  void set_push_mode(bool on) { push_mode_ = on; }

  // Completes overdue requests with errc::timeout: waiting ones are removed (never
  // written; setup requests excepted), in-flight ones are marked abandoned and keep their
  // place until their replies come. True when the head of the in-flight queue was newly
  // found overdue: the server or the link is stuck, drop the connection.
  bool expire(clock_type::time_point now);

  // The link is up: the handshake comes first (queue it with `setup`).
  void connected();
  // The handshake succeeded: everything waiting may be written.
  void handshake_done();
  // The link dropped (no-op when it is down). Written requests fail with
  // errc::connection_lost, except retry_if_sent ones, which go back to the front of the
  // waiting queue (unless stopped); setup requests fail with `setup_error`;
  // fail_if_disconnected waiting requests fail with errc::not_connected; the other
  // unwritten requests wait for the next link. Late replies of abandoned requests are
  // forgotten.
  void connection_lost(std::error_code setup_error);
  // Refuses new requests. When the link is up, first as connection_lost(shutting_down)
  // without resending; then everything left fails with errc::shutting_down.
  void stop();

  bool ready() const { return link_ == link_state::ready; }
  bool link_up() const { return link_ != link_state::down; }
  bool stopped() const { return stopped_; }
  std::size_t waiting() const { return waiting_.size(); }
  std::size_t in_flight() const { return in_flight_.size(); }

private:
  enum class link_state : std::uint8_t { down, handshaking, ready };
  using entry_ptr = std::shared_ptr<entry>;

  static void finish(entry& e, std::error_code ec);

  std::deque<entry_ptr> waiting_;
  std::deque<entry_ptr> in_flight_;
  link_state link_ = link_state::down;
  bool stopped_ = false;
  bool push_mode_ = false;
};

}  // namespace stargazer::redis::detail

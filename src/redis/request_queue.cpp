#include "request_queue.hpp"

#include "stargazer/core/error.hpp"

#include <utility>

namespace stargazer::redis::detail {

bool is_push_message(const reply& r) {
  if (!r.is_array() || r.elements().empty() || !r.elements()[0].is_bulk()) return false;
  const auto& k = r.elements()[0].str();
  return k == "message" || k == "pmessage" || k == "subscribe" || k == "psubscribe" || k == "unsubscribe" ||
         k == "punsubscribe";
}

// One request on its way: waiting, in flight, done.
struct request_queue::entry {
  std::string payload;
  std::size_t expected = 0;  // replies to wait for; 0: complete once written
  std::size_t received = 0;  // replies that came for it, kept or (abandoned) discarded
  std::vector<reply> replies;
  clock_type::time_point deadline;
  bool retry_if_sent = false;
  bool fail_if_disconnected = false;
  bool setup = false;
  bool abandoned = false;  // completed (timeout) while in flight: absorb its replies
  bool completed = false;
  completion on_complete;
};

request_queue::write_batch::write_batch() = default;
request_queue::write_batch::~write_batch() = default;
request_queue::write_batch::write_batch(write_batch&&) noexcept = default;
request_queue::write_batch& request_queue::write_batch::operator=(write_batch&&) noexcept = default;

const std::string& request_queue::write_batch::payload(std::size_t i) const { return entries_.at(i)->payload; }

request_queue::request_queue() = default;
request_queue::~request_queue() = default;

void request_queue::finish(entry& e, std::error_code ec) {
  if (e.completed) return;
  e.completed = true;
  std::vector<reply> replies;
  if (!ec) replies = std::move(e.replies);
  e.replies.clear();
  // Moved out: whatever the callback holds is released once it has run, even though an
  // abandoned entry stays in flight until its replies come.
  auto done = std::move(e.on_complete);
  e.on_complete = nullptr;
  if (done) done(ec, std::move(replies));
}

bool request_queue::enqueue(item it) {
  auto e = std::make_shared<entry>();
  e->payload = std::move(it.payload);
  e->expected = it.expected;
  e->deadline = it.deadline;
  e->retry_if_sent = it.retry_if_sent;
  e->fail_if_disconnected = it.fail_if_disconnected;
  e->setup = it.setup;
  e->on_complete = std::move(it.on_complete);
  if (stopped_) {
    finish(*e, errc::shutting_down);
    return false;
  }
  if (e->payload.empty()) {
    finish(*e, {});
    return false;
  }
  if (!ready() && e->fail_if_disconnected) {
    finish(*e, errc::not_connected);
    return false;
  }
  if (e->setup || it.ahead) waiting_.push_front(std::move(e));
  else waiting_.push_back(std::move(e));
  return true;
}

request_queue::write_batch request_queue::take_writable(std::size_t max_requests) {
  write_batch batch;
  if (link_ == link_state::down) return batch;
  auto& taken = batch.entries_;
  for (auto it = waiting_.begin(); it != waiting_.end() && taken.size() < max_requests;) {
    const auto& e = *it;
    if (e->completed) {
      it = waiting_.erase(it);
      continue;
    }
    if (!ready() && !e->setup) {
      ++it;
      continue;
    }
    taken.push_back(e);
    it = waiting_.erase(it);
  }
  for (const auto& e : taken)
    if (e->expected > 0) in_flight_.push_back(e);
  return batch;
}

void request_queue::written(write_batch&& batch) {
  auto taken = std::move(batch.entries_);
  batch.entries_.clear();
  for (const auto& e : taken) {
    if (e->expected == 0) finish(*e, {});
    else if (!e->retry_if_sent) std::string().swap(e->payload);  // never resent: free it
  }
}

request_queue::reply_disposition request_queue::on_reply(reply& r) {
  if (push_mode_ && is_push_message(r)) return reply_disposition::push;
  if (in_flight_.empty()) return reply_disposition::unsolicited;
  auto e = in_flight_.front();
  ++e->received;
  if (!e->abandoned) e->replies.push_back(std::move(r));
  else r = reply{};
  if (e->received == e->expected) {
    in_flight_.pop_front();
    if (!e->abandoned) finish(*e, {});
  }
  return e->abandoned ? reply_disposition::absorbed : reply_disposition::matched;
}

bool request_queue::expire(clock_type::time_point now) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->deadline <= now && !(*it)->setup) {
      auto e = std::move(*it);
      it = waiting_.erase(it);
      finish(*e, errc::timeout);
    } else {
      ++it;
    }
  }
  bool head_overdue = false;
  for (std::size_t i = 0; i < in_flight_.size(); ++i) {
    auto& e = *in_flight_[i];
    if (e.deadline <= now && !e.abandoned) {
      e.abandoned = true;
      finish(e, errc::timeout);
      if (i == 0) head_overdue = true;
    }
  }
  return head_overdue;
}

void request_queue::connected() {
  if (stopped_) return;
  link_ = link_state::handshaking;
}

void request_queue::handshake_done() {
  if (link_ == link_state::handshaking) link_ = link_state::ready;
}

void request_queue::connection_lost(std::error_code setup_error) {
  if (link_ == link_state::down) return;
  link_ = link_state::down;

  const auto written = std::exchange(in_flight_, {});
  std::deque<entry_ptr> resend;
  for (const auto& e : written) {
    if (e->abandoned || e->completed) continue;
    if (e->setup) {
      finish(*e, setup_error);
    } else if (e->retry_if_sent && !stopped_) {
      e->replies.clear();
      e->received = 0;
      resend.push_back(e);
    } else {
      finish(*e, errc::connection_lost);
    }
  }
  for (const auto& e : waiting_) {
    if (e->setup) finish(*e, setup_error);
    else if (e->fail_if_disconnected) finish(*e, errc::not_connected);
  }
  std::erase_if(waiting_, [](const entry_ptr& e) { return e->completed; });
  waiting_.insert(waiting_.begin(), resend.begin(), resend.end());
}

void request_queue::stop() {
  if (stopped_) return;
  stopped_ = true;
  connection_lost(errc::shutting_down);
  for (const auto& e : std::exchange(waiting_, {})) finish(*e, errc::shutting_down);
  for (const auto& e : std::exchange(in_flight_, {})) finish(*e, errc::shutting_down);
}

}  // namespace stargazer::redis::detail

#include "stargazer/redis/subscriber.hpp"

#include "stargazer/core/error.hpp"

#include <boost/asio.hpp>

namespace stargazer::redis {

namespace asio = boost::asio;

struct subscriber::impl {
  impl(asio::any_io_executor ex, connection_settings settings, metrics::registry* metrics, std::size_t max)
      : executor(ex), conn(ex, std::move(settings), metrics), signal(ex, std::chrono::steady_clock::time_point::max()),
        max_queued(max) {}

  asio::any_io_executor executor;
  connection conn;
  std::set<std::string> channels;
  std::set<std::string> patterns;
  std::deque<pubsub_message> queue;
  asio::steady_timer signal;  // wakes receive()
  std::function<void(pubsub_message&&)> handler;
  std::size_t max_queued;
  std::uint64_t dropped = 0;
  std::size_t confirmed = 0;
  bool stopped = false;

  void on_push(reply&& r) {
    auto& e = r.elements();
    const auto& kind = e[0].str();
    if (kind == "message" && e.size() == 3) {
      deliver({{}, std::move(e[1].str()), std::move(e[2].str())});
    } else if (kind == "pmessage" && e.size() == 4) {
      deliver({std::move(e[1].str()), std::move(e[2].str()), std::move(e[3].str())});
    } else if (e.size() == 3 && e[2].is_integer()) {
      // (p)(un)subscribe confirmation: the count of active subscriptions.
      confirmed = static_cast<std::size_t>(e[2].integer());
    }
  }

  void deliver(pubsub_message&& m) {
    if (handler) {
      handler(std::move(m));
      return;
    }
    if (queue.size() >= max_queued) {
      queue.pop_front();
      ++dropped;
    }
    queue.push_back(std::move(m));
    signal.cancel();
  }

  request resubscribe() const {
    request r;
    r.set_expects_replies(false);
    if (!channels.empty()) r.push_with({"SUBSCRIBE"}, {channels.begin(), channels.end()});
    if (!patterns.empty()) r.push_with({"PSUBSCRIBE"}, {patterns.begin(), patterns.end()});
    return r;
  }

  asio::awaitable<std::error_code> send(std::string_view verb, const std::vector<std::string>& names) {
    if (names.empty()) co_return std::error_code{};
    request r;
    r.set_expects_replies(false);
    r.push_with({verb}, names);
    auto res = co_await conn.exec(std::move(r));
    co_return res ? std::error_code{} : res.error();
  }
};

subscriber::subscriber(asio::any_io_executor ex, connection_settings settings, metrics::registry* metrics,
                       std::size_t max_queued)
    : impl_(std::make_shared<impl>(ex, std::move(settings), metrics, max_queued)) {
  auto* raw = impl_.get();
  impl_->conn.set_push_handler([raw](reply&& r) { raw->on_push(std::move(r)); });
  impl_->conn.set_on_connect([raw] { return raw->resubscribe(); });
}

subscriber::~subscriber() { stop(); }

void subscriber::start() { impl_->conn.start(); }

void subscriber::stop() {
  impl_->stopped = true;
  impl_->conn.stop();
  impl_->signal.cancel();
}

asio::awaitable<std::error_code> subscriber::subscribe(std::vector<std::string> channels) {
  auto self = impl_;
  self->channels.insert(channels.begin(), channels.end());
  co_return co_await self->send("SUBSCRIBE", channels);
}

asio::awaitable<std::error_code> subscriber::psubscribe(std::vector<std::string> patterns) {
  auto self = impl_;
  self->patterns.insert(patterns.begin(), patterns.end());
  co_return co_await self->send("PSUBSCRIBE", patterns);
}

asio::awaitable<std::error_code> subscriber::unsubscribe(std::vector<std::string> channels) {
  auto self = impl_;
  for (const auto& c : channels) self->channels.erase(c);
  co_return co_await self->send("UNSUBSCRIBE", channels);
}

asio::awaitable<std::error_code> subscriber::punsubscribe(std::vector<std::string> patterns) {
  auto self = impl_;
  for (const auto& p : patterns) self->patterns.erase(p);
  co_return co_await self->send("PUNSUBSCRIBE", patterns);
}

asio::awaitable<result<pubsub_message>> subscriber::receive() {
  auto self = impl_;
  while (self->queue.empty() && !self->stopped) {
    self->signal.expires_at(std::chrono::steady_clock::time_point::max());
    boost::system::error_code ec;
    co_await self->signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (self->queue.empty()) co_return make_error_code(errc::shutting_down);
  auto m = std::move(self->queue.front());
  self->queue.pop_front();
  co_return m;
}

void subscriber::set_handler(std::function<void(pubsub_message&&)> handler) { impl_->handler = std::move(handler); }
std::uint64_t subscriber::dropped() const { return impl_->dropped; }
std::size_t subscriber::confirmed() const { return impl_->confirmed; }
connection& subscriber::link() { return impl_->conn; }

}  // namespace stargazer::redis

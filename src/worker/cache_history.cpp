#include "stargazer/worker/cache_history.hpp"

#include "stargazer/platform/message_cache.hpp"

namespace stargazer::worker {

tools::channel_history_reader history_from_cache(redis::connection& redis) {
  return [&redis](const std::string& platform, const std::string& channel_id,
                  std::size_t limit) -> boost::asio::awaitable<result<std::vector<tools::history_line>>> {
    platform::message_cache cache(redis);
    auto recent = co_await cache.recent(platform, channel_id, limit);
    if (!recent) co_return recent.error();
    std::vector<tools::history_line> lines;
    lines.reserve(recent->size());
    for (auto& m : *recent)
      lines.push_back({std::move(m.user_id), std::move(m.user_name), std::move(m.text), m.timestamp, m.is_bot});
    co_return lines;
  };
}

}  // namespace stargazer::worker

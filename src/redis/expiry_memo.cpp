#include "stargazer/redis/expiry_memo.hpp"

namespace stargazer::redis {

expiry_memo::expiry_memo(std::chrono::seconds interval, std::size_t capacity)
    : interval_(interval), capacity_(capacity == 0 ? 1 : capacity) {}

bool expiry_memo::due(std::string_view key, clock_type::time_point now) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(std::string(key)); it != entries_.end()) {
    if (now - it->second.refreshed < interval_) return false;
    it->second.refreshed = now;
    order_.splice(order_.end(), order_, it->second.position);
    return true;
  }
  // Forgetting the least recently refreshed key only costs it one EXPIRE too many.
  if (entries_.size() >= capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.emplace_back(key);
  entries_.emplace(order_.back(), entry{now, std::prev(order_.end())});
  return true;
}

void expiry_memo::forget(std::string_view key) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(std::string(key));
  if (it == entries_.end()) return;
  order_.erase(it->second.position);
  entries_.erase(it);
}

void expiry_memo::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
  order_.clear();
}

}  // namespace stargazer::redis

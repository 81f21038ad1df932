#pragma once
// A small Prometheus registry: counters, gauges, histograms and scrape-time callbacks.
// Metric objects are owned by the registry and live as long as it does, so components
// keep plain references. Updates are lock-free atomics; registration and rendering
// take a mutex. Rendering produces the Prometheus text exposition format 0.0.4.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace stargazer::metrics {

using label_set = std::vector<std::pair<std::string, std::string>>;

class counter {
public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<std::uint64_t> value_{0};
};

class gauge {
public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<double> value_{0};
};

class histogram {
public:
  // `bounds` are the upper bounds of the buckets, ascending; +Inf is implicit.
  explicit histogram(std::vector<double> bounds);
  void observe(double v);

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count of bucket i (i == bounds().size() is the +Inf bucket).
  std::uint64_t bucket_count(std::size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Latency buckets in seconds, from 100 µs to 10 s.
std::vector<double> latency_buckets();

class registry;

// Unregisters a scrape-time callback when destroyed; hold it as long as the callback's
// captures live.
class callback_handle {
public:
  callback_handle() = default;
  callback_handle(registry* owner, std::uint64_t id) : owner_(owner), id_(id) {}
  callback_handle(callback_handle&& other) noexcept { *this = std::move(other); }
  callback_handle& operator=(callback_handle&& other) noexcept;
  ~callback_handle();

private:
  registry* owner_ = nullptr;
  std::uint64_t id_ = 0;
};

class registry {
public:
  registry() = default;
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // Returns the series for (name, labels), creating it on first use. Asking for an
  // existing name with a different type throws std::logic_error.
  counter& make_counter(const std::string& name, const std::string& help, label_set labels = {});
  gauge& make_gauge(const std::string& name, const std::string& help, label_set labels = {});
  histogram& make_histogram(const std::string& name, const std::string& help,
                            std::vector<double> bounds = latency_buckets(),
                            label_set labels = {});

  // A gauge whose value is computed at scrape time.
  [[nodiscard]] callback_handle make_gauge_callback(const std::string& name, const std::string& help,
                                                    label_set labels, std::function<double()> fn);

  std::string render() const;

private:
  friend class callback_handle;
  enum class kind { counter, gauge, histogram };
  struct series {
    label_set labels;
    std::unique_ptr<counter> c;
    std::unique_ptr<gauge> g;
    std::unique_ptr<histogram> h;
    std::function<double()> fn;
    std::uint64_t callback_id = 0;
  };
  struct family {
    std::string help;
    kind type;
    std::vector<series> members;
  };

  series& find_or_add(const std::string& name, const std::string& help, kind type, label_set labels,
                      bool& created);
  void remove_callback(std::uint64_t id);

  mutable std::mutex mutex_;
  std::map<std::string, family> families_;
  std::uint64_t next_callback_id_ = 1;
};

}  // namespace stargazer::metrics

#include "stargazer/core/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace stargazer::metrics {
namespace {

void append_escaped_label(std::string& out, const std::string& value) {
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
}

std::string render_labels(const label_set& labels, const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && extra == nullptr) return {};
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::pair<std::string, std::string>& kv) {
    if (!first) out.push_back(',');
    first = false;
    out += kv.first;
    out += "=\"";
    append_escaped_label(out, kv.second);
    out.push_back('"');
  };
  for (const auto& kv : labels) add(kv);
  if (extra != nullptr) add(*extra);
  out.push_back('}');
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

}  // namespace

histogram::histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()))
    throw std::logic_error("histogram bounds must be ascending");
}

void histogram::observe(double v) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  counts_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<double> latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

callback_handle& callback_handle::operator=(callback_handle&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr) owner_->remove_callback(id_);
    owner_ = std::exchange(other.owner_, nullptr);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

callback_handle::~callback_handle() {
  if (owner_ != nullptr) owner_->remove_callback(id_);
}

registry::series& registry::find_or_add(const std::string& name, const std::string& help, kind type,
                                        label_set labels, bool& created) {
  auto [it, inserted] = families_.try_emplace(name, family{help, type, {}});
  if (!inserted && it->second.type != type)
    throw std::logic_error("metric " + name + " registered with two types");
  auto& members = it->second.members;
  for (auto& s : members) {
    if (s.labels == labels && s.callback_id == 0) {
      created = false;
      return s;
    }
  }
  created = true;
  members.push_back(series{std::move(labels), nullptr, nullptr, nullptr, {}, 0});
  return members.back();
}

counter& registry::make_counter(const std::string& name, const std::string& help, label_set labels) {
  std::lock_guard lock(mutex_);
  bool created = false;
  auto& s = find_or_add(name, help, kind::counter, std::move(labels), created);
  if (created) s.c = std::make_unique<counter>();
  return *s.c;
}

gauge& registry::make_gauge(const std::string& name, const std::string& help, label_set labels) {
  std::lock_guard lock(mutex_);
  bool created = false;
  auto& s = find_or_add(name, help, kind::gauge, std::move(labels), created);
  if (created) s.g = std::make_unique<gauge>();
  if (!s.g) throw std::logic_error("metric " + name + " is a callback gauge");
  return *s.g;
}

histogram& registry::make_histogram(const std::string& name, const std::string& help,
                                    std::vector<double> bounds, label_set labels) {
  std::lock_guard lock(mutex_);
  bool created = false;
  auto& s = find_or_add(name, help, kind::histogram, std::move(labels), created);
  if (created) s.h = std::make_unique<histogram>(std::move(bounds));
  return *s.h;
}

callback_handle registry::make_gauge_callback(const std::string& name, const std::string& help,
                                              label_set labels, std::function<double()> fn) {
  std::lock_guard lock(mutex_);
  auto [it, inserted] = families_.try_emplace(name, family{help, kind::gauge, {}});
  if (!inserted && it->second.type != kind::gauge)
    throw std::logic_error("metric " + name + " registered with two types");
  const auto id = next_callback_id_++;
  it->second.members.push_back(series{std::move(labels), nullptr, nullptr, nullptr, std::move(fn), id});
  return callback_handle(this, id);
}

void registry::remove_callback(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  for (auto& [name, fam] : families_) {
    std::erase_if(fam.members, [id](const series& s) { return s.callback_id == id; });
  }
}

std::string registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    if (fam.members.empty()) continue;
    const char* type = fam.type == kind::counter ? "counter" : fam.type == kind::gauge ? "gauge" : "histogram";
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, fam.help, name, type);
    for (const auto& s : fam.members) {
      if (s.c) {
        fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, render_labels(s.labels), s.c->value());
      } else if (s.g) {
        fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, render_labels(s.labels), format_value(s.g->value()));
      } else if (s.fn) {
        fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, render_labels(s.labels), format_value(s.fn()));
      } else if (s.h) {
        std::uint64_t cumulative = 0;
        const auto& bounds = s.h->bounds();
        for (std::size_t i = 0; i <= bounds.size(); ++i) {
          cumulative += s.h->bucket_count(i);
          const std::pair<std::string, std::string> le{"le", i < bounds.size() ? format_value(bounds[i]) : "+Inf"};
          fmt::format_to(std::back_inserter(out), "{}_bucket{} {}\n", name, render_labels(s.labels, &le), cumulative);
        }
        fmt::format_to(std::back_inserter(out), "{}_sum{} {}\n", name, render_labels(s.labels), format_value(s.h->sum()));
        fmt::format_to(std::back_inserter(out), "{}_count{} {}\n", name, render_labels(s.labels), s.h->count());
      }
    }
  }
  return out;
}

}  // namespace stargazer::metrics

#pragma once
// Private: the metrics every LLM provider reports (names in docs/operations.md), and the
// component logger.

#include "stargazer/core/log.hpp"
#include "stargazer/llm/chat.hpp"

#include <array>
#include <chrono>
#include <string>

namespace stargazer::metrics {
class registry;
class counter;
class histogram;
}  // namespace stargazer::metrics

namespace stargazer::llm::detail {

const log::logger& llm_log();

class provider_metrics {
public:
  // All series are created up front (zero until used); a null registry records nothing.
  provider_metrics(metrics::registry* registry, const std::string& provider);

  // One complete() call: its outcome, its duration (retries included) and, on success,
  // its tokens.
  void finished(const outcome& result, std::chrono::steady_clock::duration took);
  void retried(failure::kind reason);

private:
  static constexpr std::size_t kinds = 6;  // failure::kind values
  metrics::counter* ok_ = nullptr;
  std::array<metrics::counter*, kinds> failed_{};
  std::array<metrics::counter*, kinds> retries_{};
  metrics::counter* prompt_tokens_ = nullptr;
  metrics::counter* completion_tokens_ = nullptr;
  metrics::histogram* seconds_ = nullptr;
};

}  // namespace stargazer::llm::detail

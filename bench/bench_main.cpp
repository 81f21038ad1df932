// stargazer_bench <benchmark> [options]: prints figures, asserts nothing.

#include "bench.hpp"

#include <fmt/format.h>

#include <functional>
#include <map>

namespace stargazer::bench {

std::string option(const args& a, const std::string& name, const std::string& fallback) {
  for (std::size_t i = 0; i + 1 < a.size(); ++i)
    if (a[i] == name) return a[i + 1];
  return fallback;
}

}  // namespace stargazer::bench

int main(int argc, char** argv) {
  using namespace stargazer::bench;
  const std::map<std::string, std::pair<std::function<int(const args&)>, const char*>> benchmarks = {
      {"router", {router, "route + dispatch a REST-shaped path [--iterations N]"}},
      {"metrics", {metrics, "histogram observe + counter increment [--iterations N]"}},
      {"rest", {rest, "POST .../messages?wait=true through gateway + echo worker, load from wrk [--connections 32] [--seconds 10]"}},
      {"redis", {redis, "pipelined commands on one connection vs redis-benchmark -P 16 -c 1 "
                        "[--command set|xadd] [--coroutines 64] [--seconds 5] [--url redis://...]"}},
      {"pipeline", {pipeline, "event bus end to end: publish_inbound -> worker consumer(s) -> outbound consumer -> "
                              "adapter send; msg/s, p50/p95/p99, Redis commands/message [--messages 20000] "
                              "[--channels 200] [--workers 1] [--paced RATE] [--publishers 64] [--warmup 1000] "
                              "[--url redis://... | --unix]"}},
      {"processes", {processes, "bus level through real processes: publish_inbound -> W worker processes (echo model) -> "
                                "gateway process -> Redis platform events; msg/s, p50/p95/p99, CPU per 1,000 "
                                "messages and RSS per process [--workers 1] [--messages 20000] [--channels 1000] "
                                "[--delay-ms 0] [--paced RATE] [--publishers 64] [--warmup 500] [--tcp] [--binary PATH]"}},
      {"discord", {discord_rate_limits, "Discord rate limits shared by gateway processes against the Discord test "
                                        "server: wall time vs the limits' minimum, 429s, lost/duplicated "
                                        "[--gateways 3] [--sends 200] [--channels 4] [--channel-limit 5] "
                                        "[--channel-window 5] [--global 50]"}},
      {"triage", {triage, "what the reply policy costs per unaddressed message: model calls, Redis commands, "
                          "time, per policy [--messages 2000]"}},
      {"soak", {soak, "REST wait=true at a fixed rate through gateway + worker processes (echo model) until every cap "
                      "is reached, then RSS, Redis used_memory and key count over the window (flat: within ±10 %) "
                      "[--channels 1000] [--rate 300] [--warmup-minutes 3] [--minutes 30] [--sample-seconds 60] "
                      "[--history-keep 50] [--stream-maxlen 10000] [--prefill-events yes|no] [--binary PATH]"}},
  };
  const std::string which = argc > 1 ? argv[1] : "";
  if (auto it = benchmarks.find(which); it != benchmarks.end()) return it->second.first(args(argv + 2, argv + argc));
  fmt::print("usage: stargazer_bench <benchmark> [options]\n");
  for (const auto& [name, entry] : benchmarks) fmt::print("  {:<10} {}\n", name, entry.second);
  return which.empty() || which == "--help" ? 0 : 2;
}

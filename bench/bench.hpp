#pragma once
// Benchmarks print figures and assert nothing. Each takes its command-line arguments
// after the benchmark name.

#include <string>
#include <vector>

namespace stargazer::bench {

using args = std::vector<std::string>;

int router(const args& a);
int metrics(const args& a);
int redis(const args& a);
int rest(const args& a);
int pipeline(const args& a);
int processes(const args& a);
int discord_rate_limits(const args& a);
int triage(const args& a);
int soak(const args& a);

// "--name value" lookup with a default.
std::string option(const args& a, const std::string& name, const std::string& fallback);

}  // namespace stargazer::bench

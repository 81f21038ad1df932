// Inject with wait=true through the whole pipeline: HTTP -> Redis platform -> inbound
// stream -> echo worker -> outbound stream -> gateway -> Pub/Sub -> the waiting request.
// The gateway and an echo worker (a stand-in for the worker role with the echo model,
// which is not built yet) run in this process; load comes from `wrk` (Debian package).

#include "bench.hpp"

#include "gateway_fixture.hpp"
#include "raw_http.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <cstdio>
#include <fstream>

namespace stargazer::bench {

int rest(const args& a) {
  const auto connections = option(a, "--connections", "32");
  const auto seconds = option(a, "--seconds", "10");
  if (std::system("command -v wrk >/dev/null 2>&1") != 0) {
    fmt::print("rest: needs wrk (apt-get install wrk)\n");
    return 2;
  }
  test::gateway_fixture g;
  const auto created = test::http_request(g.port(), "POST", "/redis-platform/instances", "{}",
                                          std::string("Authorization: Bearer ") + test::gateway_fixture::admin_key + "\r\n");
  rapidjson::Document d;
  d.Parse(created.body.c_str());
  if (created.status != 201 || d.HasParseError()) {
    fmt::print("rest: could not create an instance: {}\n", created.raw);
    return 1;
  }
  const std::string id = d["instance_id"].GetString(), key = d["api_key"].GetString();
  const std::string script = "/tmp/stargazer-rest-bench.lua";
  std::ofstream(script) << "wrk.method = \"POST\"\n"
                        << "wrk.body = '{\"text\":\"hello\",\"user_id\":\"u1\",\"user_name\":\"Ada\"}'\n"
                        << "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
                        << "wrk.headers[\"Authorization\"] = \"Bearer " << key << "\"\n";
  const auto cmd = fmt::format("wrk -t2 -c{} -d{}s --latency -s {} 'http://127.0.0.1:{}/redis-platform/instances/{}/messages?wait=true&timeout=10'",
                               connections, seconds, script, g.port(), id);
  fmt::print("gateway + echo worker in one process (one io thread), Redis on a TCP port; {}\n", cmd);
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  std::remove(script.c_str());
  return rc == 0 ? 0 : 1;
}

}  // namespace stargazer::bench

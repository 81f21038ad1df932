#include "stargazer/core/metrics.hpp"

#include <catch2/catch.hpp>

using namespace stargazer::metrics;

TEST_CASE("counters, gauges and labels render in Prometheus text format", "[metrics]") {
  registry r;
  r.make_counter("sg_requests_total", "Requests", {{"route", "/a"}}).inc(3);
  r.make_counter("sg_requests_total", "Requests", {{"route", "/b\"x"}}).inc();
  r.make_gauge("sg_connected", "Connected").set(1);
  const auto text = r.render();
  CHECK(text.find("# HELP sg_requests_total Requests\n# TYPE sg_requests_total counter\n") != std::string::npos);
  CHECK(text.find("sg_requests_total{route=\"/a\"} 3\n") != std::string::npos);
  CHECK(text.find("sg_requests_total{route=\"/b\\\"x\"} 1\n") != std::string::npos);
  CHECK(text.find("# TYPE sg_connected gauge\nsg_connected 1\n") != std::string::npos);
}

TEST_CASE("the same name and labels return the same series", "[metrics]") {
  registry r;
  auto& a = r.make_counter("c", "h");
  auto& b = r.make_counter("c", "h");
  CHECK(&a == &b);
  CHECK_THROWS_AS(r.make_gauge("c", "h"), std::logic_error);
}

TEST_CASE("histograms are cumulative with +Inf, sum and count", "[metrics]") {
  registry r;
  auto& h = r.make_histogram("lat_seconds", "Latency", {0.1, 1.0});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  const auto text = r.render();
  CHECK(text.find("lat_seconds_bucket{le=\"0.1\"} 1\n") != std::string::npos);
  CHECK(text.find("lat_seconds_bucket{le=\"1\"} 2\n") != std::string::npos);
  CHECK(text.find("lat_seconds_bucket{le=\"+Inf\"} 3\n") != std::string::npos);
  CHECK(text.find("lat_seconds_sum 5.55\n") != std::string::npos);
  CHECK(text.find("lat_seconds_count 3\n") != std::string::npos);
}

TEST_CASE("callback gauges are computed at scrape time and removed with their handle", "[metrics]") {
  registry r;
  double value = 1;
  {
    auto handle = r.make_gauge_callback("lag", "Lag", {{"stream", "s"}}, [&] { return value; });
    value = 42;
    CHECK(r.render().find("lag{stream=\"s\"} 42\n") != std::string::npos);
  }
  CHECK(r.render().find("lag{") == std::string::npos);
}

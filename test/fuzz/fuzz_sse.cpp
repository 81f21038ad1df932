// Server-Sent Events from a gateway (http/sse.hpp): any stream, in pieces chosen by the
// input, parses without crashing, and the events do not depend on how it was split.

#include "stargazer/http/sse.hpp"

#include "fuzz_check.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using stargazer::http::sse_event;
using stargazer::http::sse_parser;

bool same(const std::vector<sse_event>& a, const std::vector<sse_event>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].type != b[i].type || a[i].data != b[i].data || a[i].id != b[i].id) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider input(data, size);
  std::vector<std::size_t> cuts;
  for (int i = 0, n = input.ConsumeIntegralInRange(1, 8); i < n; ++i)
    cuts.push_back(input.ConsumeIntegralInRange<std::size_t>(1, 16));
  const std::string stream = input.ConsumeRemainingBytesAsString();

  // A large limit: how a too-long line is detected may depend on the split.
  sse_parser whole(1 << 20), pieces(1 << 20);
  const auto all = whole.feed(stream);
  std::vector<sse_event> split;
  for (std::size_t at = 0, cut = 0; at < stream.size();) {
    const auto n = std::min(cuts[cut++ % cuts.size()], stream.size() - at);
    for (auto& e : pieces.feed(std::string_view(stream).substr(at, n))) split.push_back(std::move(e));
    at += n;
  }
  FUZZ_CHECK(same(all, split));
  FUZZ_CHECK(whole.last_event_id() == pieces.last_event_id());
  FUZZ_CHECK(whole.retry() == pieces.retry());

  sse_parser small(64);  // the limit path
  (void)small.feed(stream);
  return 0;
}

// RESP replies from a hostile server (redis/resp.hpp): the parser is fed the bytes in
// pieces chosen by the input and drained after each piece, as the connection does. It
// must never crash, leak or allocate without bound, and the replies must not depend on
// how the bytes were split.

#include "stargazer/redis/resp.hpp"

#include "fuzz_check.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using stargazer::redis::resp_parser;

struct parse_result {
  std::vector<std::string> replies;  // debug_string() of each
  std::error_code error;
};

void drain(resp_parser& p, parse_result& out) {
  while (auto r = p.next()) out.replies.push_back(r->debug_string());
  out.error = p.error();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider input(data, size);
  // A small budget half the time, so the limit paths run on short inputs too.
  const std::size_t budget = input.ConsumeBool() ? 4096 : 64 * 1024 * 1024;
  std::vector<std::size_t> cuts;
  for (int i = 0, n = input.ConsumeIntegralInRange(0, 8); i < n; ++i)
    cuts.push_back(input.ConsumeIntegralInRange<std::size_t>(1, 64));
  const std::string bytes = input.ConsumeRemainingBytesAsString();

  parse_result whole;
  {
    resp_parser p(budget);
    p.feed(bytes.data(), bytes.size());
    drain(p, whole);
  }

  parse_result pieces;
  {
    resp_parser p(budget);
    std::size_t at = 0, cut = 0;
    while (at < bytes.size() && !p.error()) {
      const auto n = cuts.empty() ? bytes.size() : std::min(cuts[cut++ % cuts.size()], bytes.size() - at);
      p.feed(bytes.data() + at, n);
      at += n;
      drain(p, pieces);
    }
  }

  // Within the budget the split cannot matter (past it, feeding less at a time gets further).
  if (bytes.size() <= budget) {
    FUZZ_CHECK(whole.error == pieces.error);
    FUZZ_CHECK(whole.replies == pieces.replies);
  }
  return 0;
}

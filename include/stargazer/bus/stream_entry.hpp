#pragma once
// A stream entry as read by XREADGROUP / XAUTOCLAIM / XRANGE, and parsing of those replies.

#include "stargazer/redis/reply.hpp"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stargazer::bus {

struct stream_entry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;

  // The first field with this name; empty when absent.
  std::string_view field(std::string_view name) const {
    for (const auto& [k, v] : fields)
      if (k == name) return v;
    return {};
  }
  bool has(std::string_view name) const {
    for (const auto& [k, v] : fields)
      if (k == name) return true;
    return false;
  }
};

// [[id, [f, v, ...]], ...]; entries whose fields are nil (deleted by trimming) get no
// fields. Malformed elements are skipped.
std::vector<stream_entry> parse_entries(redis::reply& list);
// XREADGROUP reply: [[stream, [[id, [f, v...]], ...]]] (nil when the block timed out).
std::vector<stream_entry> parse_xread(redis::reply& r);

}  // namespace stargazer::bus

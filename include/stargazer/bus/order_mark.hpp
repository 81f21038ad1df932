#pragma once
// The order mark of one sequenced entry (docs/protocol.md §4.6): `done` = seq in its
// channel's order set, written after the entry's work so its successor may run. A body
// whose last write is one Redis script writes the mark in that script, atomically with the
// work, and says so (`written`): the channel_sequencer then sends nothing more for it.

#include <cstdint>
#include <string>
#include <string_view>

namespace stargazer::bus {

struct order_mark {
  std::string key;        // the channel's order set (order_key())
  std::uint64_t seq = 0;  // 0: the entry has no sequence number, nothing to write
  bool written = false;   // set by the script's caller once the script ran

  bool wanted() const { return seq > 0 && !written; }
};

// Whether a send that may carry `mark` (nullptr: none) is to write it.
inline bool mark_wanted(const order_mark* mark) { return mark != nullptr && mark->wanted(); }

// The Lua source of `local function mark_done(key, seq)`, for scripts that carry the mark.
std::string_view mark_done_lua();

}  // namespace stargazer::bus

#pragma once
// The message cache as the built-in read_channel_history tool reads it: the tools module
// knows only the reader interface (tools/builtin.hpp); this wires it to the cache.

#include "stargazer/tools/builtin.hpp"

namespace stargazer::redis {
class connection;
}

namespace stargazer::worker {

// `redis` must outlive the reader.
tools::channel_history_reader history_from_cache(redis::connection& redis);

}  // namespace stargazer::worker

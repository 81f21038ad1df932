#pragma once
// Failpoints: named places where a test kills the process, to prove what survives a crash at
// exactly that point (after a platform accepted a send and before its completion marker,
// between publishing a batch and storing its sync token). Test builds only: with
// STARGAZER_FAILPOINTS (on for Debug builds, so the asan and debug presets) a process reads
// SG_FAILPOINTS="name=kill[@n],..." once; the n-th time (default: the first) `name` is
// reached it SIGKILLs itself, leaving no chance to clean up, as a crash or an OOM kill does.
// Other builds compile `failpoint` to a call that returns at once.

#include <string_view>

namespace stargazer {

void failpoint(std::string_view name);

}  // namespace stargazer

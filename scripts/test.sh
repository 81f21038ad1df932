#!/usr/bin/env bash
# Installs what is missing, builds with AddressSanitizer + UndefinedBehaviorSanitizer
# and runs every test (unit and integration, real redis-server processes), then a short
# fuzzing smoke run (test/fuzz/run.sh, clang).
#   SG_TEST_PRESET=debug scripts/test.sh   # the same tests without sanitizers
#   SG_FUZZ_SECONDS=0 scripts/test.sh      # no fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."
SG_DEPS_TEST_SERVERS=1 scripts/deps.sh
# ccache keyed on paths relative to the checkout, so every clone on this machine
# (CI clones afresh) reuses the same cache entries.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
preset="${SG_TEST_PRESET:-asan}"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset"
# About 45 seconds of fuzzing in all: eleven targets, two at a time, 8 s each.
fuzz_seconds="${SG_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  SG_FUZZ_JOBS=2 test/fuzz/run.sh "$(( (fuzz_seconds * 2 + 7) / 8 ))"
fi

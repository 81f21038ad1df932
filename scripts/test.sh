#!/usr/bin/env bash
# Installs what is missing, builds with AddressSanitizer + UndefinedBehaviorSanitizer
# and runs every test (unit and integration, real redis-server processes).
#   SG_TEST_PRESET=debug scripts/test.sh   # the same tests without sanitizers
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# ccache keyed on paths relative to the checkout, so every clone on this machine
# (CI clones afresh) reuses the same cache entries.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
preset="${SG_TEST_PRESET:-asan}"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset"

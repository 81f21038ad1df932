#!/usr/bin/env bash
# Installs what is missing, builds the release binary and runs Stargazer standalone.
# Extra arguments go to stargazer, e.g. scripts/run.sh --http-port 9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target stargazer
exec build/release/roles/stargazer --role=standalone "$@"

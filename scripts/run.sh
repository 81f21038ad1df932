#!/usr/bin/env bash
# Installs what is missing, builds the release binary and runs Stargazer standalone:
# gateway, worker and tools in one process, its own redis-server (AOF) under
# ./stargazer-data (or $SG_DATA_DIR), the web chat and the REST API on 127.0.0.1:8080.
# It prints the web chat's address and, on first start, the admin API key.
# Extra arguments go to stargazer, e.g. scripts/run.sh --http-port 9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target stargazer
exec build/release/roles/stargazer --role=standalone "$@"

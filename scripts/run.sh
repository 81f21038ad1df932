#!/usr/bin/env bash
# Installs what is missing, builds the release binary and runs Stargazer standalone.
# Extra arguments go to stargazer, e.g. scripts/run.sh --http-port 9000
#
# Until standalone starts its own redis-server (not built yet), this script does it:
# with no SG_REDIS_URL set it runs one on a unix socket under ./stargazer-data (AOF on)
# for the lifetime of the command. It also creates an admin API key on first start
# (./stargazer-data/admin.key) and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target stargazer

data_dir="${SG_DATA_DIR:-$PWD/stargazer-data}"
mkdir -p "$data_dir"
if [ -z "${SG_ADMIN_API_KEY:-}" ]; then
  if [ ! -s "$data_dir/admin.key" ]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$data_dir/admin.key")
    echo "Admin API key (stored in $data_dir/admin.key): $(cat "$data_dir/admin.key")"
  fi
  export SG_ADMIN_API_KEY="$(cat "$data_dir/admin.key")"
fi
if [ -z "${SG_REDIS_URL:-}" ]; then
  socket="$data_dir/redis.sock"
  rm -f "$socket"
  redis-server --port 0 --unixsocket "$socket" --unixsocketperm 700 --dir "$data_dir" \
    --appendonly yes --save "" --daemonize no --logfile "$data_dir/redis.log" &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null' EXIT
  for _ in $(seq 100); do redis-cli -s "$socket" ping >/dev/null 2>&1 && break; sleep 0.05; done
  export SG_REDIS_URL="unix://$socket"
fi
echo "Starting Stargazer standalone: open the address of the 'listening on' line below for the web chat; the REST API is under /redis-platform (docs/rest-api.md)"
build/release/roles/stargazer --role=standalone "$@"

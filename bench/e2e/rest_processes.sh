#!/usr/bin/env bash
# End-to-end REST benchmark with the real roles as separate processes: redis-server on a
# unix socket, one `stargazer --role=gateway`, W `--role=worker` (the message processor
# with the offline echo model, optional model delay), and wrk posting
# `POST /redis-platform/instances/{id}/messages?wait=true` to random instances.
# Prints wrk's figures, CPU seconds and peak RSS of each process.
#   bench/e2e/rest_processes.sh [--workers 1] [--instances 32] [--connections 32] [--seconds 10] [--delay-ms 0]
# Needs a release build (cmake --preset release && cmake --build --preset release) and wrk.
set -euo pipefail
workers=1 instances=32 connections=32 seconds=10 delay=0
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --instances) instances=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --delay-ms) delay=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$root/build/release/roles/stargazer"
[ -x "$bin" ] || { echo "build the release preset first" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

redis-server --port 0 --unixsocket "$tmp/redis.sock" --save "" --appendonly no --dir "$tmp" --daemonize no \
  --logfile "$tmp/redis.log" & redis=$!; pids+=($redis)
for _ in $(seq 100); do redis-cli -s "$tmp/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.05; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SG_REDIS_URL="unix://$tmp/redis.sock" SG_ADMIN_API_KEY=bench-admin SG_LOG_LEVEL=warn
# wrk connects from 127.0.0.1 alone: no per-address cap.
"$bin" --role=gateway --http-port="$port" --http-max-connections-per-ip=0 --node-id=gw >"$tmp/gateway.log" 2>&1 & gateway=$!; pids+=($gateway)
worker_pids=()
for i in $(seq "$workers"); do
  "$bin" --role=worker --node-id="w$i" --llm-provider=echo --llm-echo-delay-ms="$delay" >"$tmp/worker$i.log" 2>&1 &
  worker_pids+=($!); pids+=($!)
done
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done

ids=()
for i in $(seq "$instances"); do
  curl -sf -XPOST "http://127.0.0.1:$port/redis-platform/instances" -H "Authorization: Bearer bench-admin" \
    -H 'Content-Type: application/json' -d "{\"instance_id\":\"bench-$i\"}" >/dev/null
  ids+=("\"bench-$i\"")
done
cat >"$tmp/post.lua" <<LUA
local ids = {$(IFS=,; echo "${ids[*]}")}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-admin"
wrk.body = '{"text":"hello bench","user_id":"u1","user_name":"Bench"}'
request = function()
  return wrk.format(nil, "/redis-platform/instances/" .. ids[math.random(#ids)] .. "/messages?wait=true&timeout=10")
end
LUA
cpu() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
declare -A cpu_before
for p in "$gateway" "${worker_pids[@]}" "$redis"; do cpu_before[$p]=$(cpu "$p"); done
echo "gateway + $workers worker(s), $instances instances, $connections connections, ${seconds}s, model delay ${delay} ms"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/" | tee "$tmp/wrk.out" |
  grep -E "Requests/sec|50%|90%|99%|Non-2xx|Socket errors|requests in"
requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
for p in "$gateway" "${worker_pids[@]}" "$redis"; do
  name=$([ "$p" = "$gateway" ] && echo gateway || { [ "$p" = "$redis" ] && echo redis-server || echo "worker(pid $p)"; })
  used=$(awk -v a="$(cpu "$p")" -v b="${cpu_before[$p]}" 'BEGIN {print a - b}')
  peak=$(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' "/proc/$p/status")
  printf '%-18s CPU %.2f s (%.3f s per 1,000 requests), peak RSS %s\n' "$name" "$used" \
    "$(awk -v u="$used" -v n="$requests" 'BEGIN {print u * 1000 / n}')" "$peak"
done

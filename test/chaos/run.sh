#!/usr/bin/env bash
# The full chaos run by hand (docs/chaos.md): a release build, then 10,000 messages over
# 200 channels with worker kills every 2 s, one gateway kill and, per variant, one Redis
# restart or one Sentinel failover; and the Discord variant (2,000 messages over 50
# channels, 2 gateways sharing 4 shards, one connection dropped) and the Matrix variant
# (2,000 messages over 50 rooms, 2 gateways, the syncing one killed once). Extra arguments
# go to every run (e.g. --seed 42).
#   test/chaos/run.sh                 # all four variants
#   SG_CHAOS_MODES=sentinel test/chaos/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
cmake --preset release >/dev/null
# Other builds may share the machine: one build at a time.
flock /tmp/sg-build.lock cmake --build --preset release --target stargazer stargazer_chaos
status=0
for mode in ${SG_CHAOS_MODES:-restart sentinel discord matrix}; do
  if [ "$mode" = discord ]; then
    # The issue's Discord run: 2 gateways sharing 4 shards, 50 channels.
    build/release/test/stargazer_chaos --mode discord --messages 2000 --channels 50 --workers 3 --gateways 2 \
      --shards 4 --rate 40 --kill-interval-ms 2000 --drain-seconds 300 "$@" || status=1
  elif [ "$mode" = matrix ]; then
    # The issue's Matrix run: 2 gateways, one syncing, 50 rooms.
    build/release/test/stargazer_chaos --mode matrix --messages 2000 --channels 50 --workers 3 --gateways 2 \
      --rate 40 --kill-interval-ms 2000 --drain-seconds 300 "$@" || status=1
  else
    build/release/test/stargazer_chaos --mode "$mode" --messages 10000 --channels 200 --workers 3 \
      --rate 100 --kill-interval-ms 2000 --drain-seconds 300 "$@" || status=1
  fi
done
exit $status

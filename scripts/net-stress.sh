#!/bin/bash
# The network ring's park and wake-up under real clients: starts evringd N times (default
# 20); each time a 1 s load of 50 connections (1 or 16 requests in flight), then pauses of
# 0.1-0.9 s (the reaper parks after 0.5 ms without a completion) between bursts of
# redis-benchmark PING, then redis-cli --latency for 5 s. Exits non-zero if a burst stalls.
# Needs redis-benchmark and redis-cli (apt-get install redis-tools) and a release build.
# Usage: scripts/net-stress.sh [N]   (PORT, RESP_PORT: loopback ports to use)
set -u
N=${1:-20}
PORT=${PORT:-17200}
RESP_PORT=${RESP_PORT:-17201}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
for i in $(seq 1 $N); do
  rm -rf "$work/data"
  ./target/release/evringd --data-dir "$work/data" --listen 127.0.0.1:$PORT --set metrics_listen='""' --set resp_listen="\"127.0.0.1:$RESP_PORT\"" > "$work/log" 2>&1 &
  P=$!; sleep 0.5
  r1=$(timeout 20 ./target/release/evring-bench network --addr 127.0.0.1:$PORT -c 50 -p $(( (i % 2) * 15 + 1 )) --duration 1s --warmup 0s --runs 1 2>&1 | tail -1 | awk '{print $(NF-6)}')
  sleep 0.$(( RANDOM % 9 + 1 ))
  for k in 1 2 3; do
    out=$(timeout 10 redis-benchmark -p $RESP_PORT -c 5 -n 500 -q PING 2>&1 | tr '\r' '\n' | grep -c "requests per second")
    [ "$out" = 1 ] || { echo "run $i burst $k: STALL"; fail=1; }
    sleep 0.$(( RANDOM % 9 + 1 ))
  done
  lat=$(timeout 5 redis-cli -p $RESP_PORT --latency -i 1 2>&1 | tr '\r' '\n' | tail -1)
  echo "run $i: load $r1 req/s, idle latency (min max avg n): $lat"
  kill $P; wait $P 2>/dev/null
done
exit $fail

#!/usr/bin/env bash
# The shard's CPU time per acknowledged event, for one evringd build, under a durable load
# of 50 connections × PIPELINE requests in flight of one 100-byte event each, over the
# native protocol (evring-bench network, APPEND) or the RESP port (redis-benchmark, XADD).
# Throughput on this machine swings with its disk; CPU time per event swings less, and
# compares two builds' request paths when they run one after the other.
#
#   scripts/shard-cpu-per-event.sh EVRINGD native|resp [PIPELINE] [SECONDS] [ROUNDS]
#
# Each round: a fresh evringd in a fresh directory under ./target (on the disk, not tmpfs),
# started on loopback and stopped by its PID; after 2 s of load, the utime + stime of the
# shard's thread (/proc/PID/task/TID/stat) and evring_events_appended_total (the metrics
# endpoint) are read at the start and the end of SECONDS. Prints events/s, the shard's CPU
# share, and µs of shard CPU (all, and user space alone) per event.
# Needs redis-benchmark (apt-get install redis-tools) for `resp`, curl, and a release build
# (cargo build --release --workspace) for evring-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

evringd=${1:?usage: $0 EVRINGD native|resp [PIPELINE] [SECONDS] [ROUNDS]}
kind=${2:?usage: $0 EVRINGD native|resp [PIPELINE] [SECONDS] [ROUNDS]}
pipeline=${3:-16}
seconds=${4:-5}
rounds=${5:-1}
bench=./target/release/evring-bench
dir=./target/shard-cpu-per-event
native_port=17071
resp_port=16381
metrics_port=19471
payload=$(printf 'x%.0s' $(seq 100))

for round in $(seq 1 "$rounds"); do
  rm -rf "$dir"
  mkdir -p "$dir"
  "$evringd" --data-dir "$dir/data" --listen 127.0.0.1:$native_port \
    --set metrics_listen="\"127.0.0.1:$metrics_port\"" \
    --set resp_listen="\"127.0.0.1:$resp_port\"" > "$dir/server.log" 2>&1 &
  server=$!
  sleep 1
  if [ "$kind" = resp ]; then
    redis-benchmark -h 127.0.0.1 -p $resp_port -c 50 -n 100000000 -P "$pipeline" -r 1000 -q \
      XADD s__rand_int__ '*' d "$payload" > /dev/null 2>&1 &
  else
    "$bench" network --addr 127.0.0.1:$native_port -c 50 -p "$pipeline" --duration 1000s \
      --runs 1 --warmup 0s > /dev/null 2>&1 &
  fi
  load=$!
  sleep 2
  # The shard's own thread: the first named evring-shard-0 (its blocking threads come later).
  task=$(for f in $(grep -l evring-shard-0 /proc/$server/task/*/comm); do dirname "$f"; done \
    | sort -t/ -k5 -n | head -1)
  ticks() { awk '{print $14 + $15, $14}' "$task/stat"; }
  events() {
    curl -s 127.0.0.1:$metrics_port/metrics \
      | awk '/^evring_events_appended_total/ {s += $2} END {printf "%d", s}'
  }
  e0=$(events); read -r t0 u0 < <(ticks); s0=$(date +%s.%N)
  sleep "$seconds"
  e1=$(events); read -r t1 u1 < <(ticks); s1=$(date +%s.%N)
  kill "$load"; wait "$load" 2>/dev/null || true
  kill "$server"; wait "$server" 2>/dev/null || true
  python3 -c "
e = $e1 - $e0; t = ($t1 - $t0) / 100; u = ($u1 - $u0) / 100; s = $s1 - $s0
print(f'round $round $kind x$pipeline: {e / s:9.0f} events/s  shard {100 * t / s:5.1f}% of a CPU  '
      f'{1e6 * t / e:5.2f} us/event ({1e6 * u / e:5.2f} in user space)')"
done

#!/usr/bin/env bash
# What keyspace and deletion commands cost on a large evringd (docs/BENCHMARKS.md, "Costs
# that grew with a stream's history or the keyspace"):
#   1. 1M streams of one entry each: SCAN 0 COUNT 10, SCAN 0 MATCH nothing COUNT 10 and
#      DBSIZE (redis-benchmark, one connection), and a whole `redis-cli --scan`;
#   2. one stream of 1M entries, every other one XDEL'd, then its oldest 100,000 left
#      deleted one by one: XLEN and XINFO STREAM.
# Each server is started here on a temporary directory and a free loopback port, and
# stopped by its PID. Needs redis-cli and redis-benchmark (apt-get install redis-tools).
#
#   scripts/keyspace-costs.sh [path/to/evringd] [calls per command, default 2000]
#
# A build older than 2876794 lists every stream per SCAN call: its whole scan of 1M keys
# would take hours (about 0.5 s per call); measure such a build's single calls only.
set -euo pipefail
EVRINGD=${1:-./target/release/evringd}
N=${2:-2000}
WORK=$(mktemp -d)
PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    PORT=$(free_port)
    rm -rf "$WORK/data"
    "$EVRINGD" --data-dir "$WORK/data" --listen 127.0.0.1:0 --set metrics_listen='""' \
        --set resp_listen="\"127.0.0.1:$PORT\"" --set pin_cpus=false > "$WORK/log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$PORT" PING > /dev/null 2>&1 && return
        sleep 0.1
    done
    echo "evringd did not answer on port $PORT; its log:" >&2
    cat "$WORK/log" >&2
    exit 1
}

stop() {
    kill "$PID"
    while kill -0 "$PID" 2> /dev/null; do sleep 0.2; done
    PID=
}

bench() {
    local out
    out=$(redis-benchmark -p "$PORT" -n "$N" -c 1 "$@" 2>&1)
    echo "$* : $(grep -o 'throughput summary: [0-9.]* requests per second' <<< "$out" | cut -d' ' -f3) calls/s"
}

echo "== 1,000,000 streams of one entry"
start
awk 'BEGIN { for (i = 1; i <= 1000000; i++) printf "XADD k%d * f v\r\n", i }' |
    redis-cli -p "$PORT" --pipe | tail -1
sleep 15 # the snapshot the load starts is written
bench SCAN 0 COUNT 10
bench SCAN 0 MATCH nothing COUNT 10
bench DBSIZE
s=$(date +%s.%N)
keys=$(redis-cli -p "$PORT" --scan | wc -l)
e=$(date +%s.%N)
echo "redis-cli --scan: $keys keys in $(awk "BEGIN { printf \"%.1f\", $e - $s }") s"
echo "RSS: $(grep VmRSS /proc/$PID/status | awk '{ print $2 }') kB"
stop

echo "== one stream of 1,000,000 entries, 600,000 deleted"
start
awk 'BEGIN { for (i = 1; i <= 1000000; i++) printf "XADD s %d-1 f v\r\n", i }' |
    redis-cli -p "$PORT" --pipe | tail -1
awk 'BEGIN { for (i = 1; i <= 1000000; i += 20) { printf "XDEL s"; for (j = i; j < i + 20; j += 2) printf " %d-1", j; printf "\r\n" } }' |
    redis-cli -p "$PORT" --pipe | tail -1
awk 'BEGIN { for (i = 2; i <= 200000; i += 2) printf "XDEL s %d-1\r\n", i }' |
    redis-cli -p "$PORT" --pipe | tail -1
echo "XLEN s: $(redis-cli -p "$PORT" XLEN s)"
sleep 15
bench XLEN s
bench XINFO STREAM s
stop

#!/usr/bin/env bash
# redis-benchmark's own client sending XADD, against evringd's RESP port and against
# redis-server with `appendonly yes` + `appendfsync always` (and, as the in-memory reference
# line, redis-server without persistence), at -P 1 and -P 16, interleaved round by round so
# every server sees the same machine weather. A cross-check of `evring-bench compare`'s
# evring-resp figures with a client that is not ours.
#
#   scripts/redis-benchmark-xadd.sh [ROUNDS]
#
# Environment: EVRINGD (default ./target/release/evringd), N1 and N16 (requests per run at
# -P 1 and -P 16; default 200000 and 1000000), TARGETS (default
# "evring-resp redis-always redis-nopersist"; also `floor-durable`, the durable floor of
# `evring-bench compare`, served by `evring-bench floor --journal`: EVRING_BENCH, default
# ./target/release/evring-bench).
#
# Each run: a fresh server in a fresh directory under ./target (on the disk, not tmpfs),
# started here on loopback and stopped by its PID, then
#   redis-benchmark -h 127.0.0.1 -p PORT -c 50 -n N -P P -r 1000 --csv \
#       XADD s__rand_int__ '*' d <100 bytes>
# (1,000 streams chosen at random, one 100-byte field per entry: the compare workloads' load).
# Prints one line per run (target, pipeline, requests/s, p50, p99), then the medians over the
# rounds and the ratios evring-resp / peer per round and their median.
# Every run is checked afterwards: the streams must hold exactly N entries (SCAN and XLEN
# through redis-cli), since redis-benchmark counts replies without reading them (the floor
# keeps no streams: its journal file must have grown by at least N × 100 bytes instead).
# Needs redis-server, redis-benchmark and redis-cli (apt-get install redis-server redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
evringd=${EVRINGD:-./target/release/evringd}
evring_bench=${EVRING_BENCH:-./target/release/evring-bench}
n1=${N1:-200000}
n16=${N16:-1000000}
targets=${TARGETS:-evring-resp redis-always redis-nopersist}
[ -x "$evringd" ] || { echo "$evringd: build it first (cargo build --release)" >&2; exit 2; }
for t in redis-server redis-benchmark redis-cli; do
    command -v "$t" >/dev/null || { echo "$t missing: apt-get install redis-server redis-tools" >&2; exit 2; }
done

mkdir -p ./target
work=$(mktemp -d ./target/redis-benchmark-xadd.XXXXXX)
work=$(cd "$work" && pwd)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

value=$(printf 'v%.0s' $(seq 1 100))
port=

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the server did not listen on port $1:" >&2
    cat "$work/server.log" >&2 || true
    exit 1
}

start() {
    rm -rf "$work/data" "$work/data.addr"
    mkdir -p "$work/data"
    case $1 in
        evring-resp)
            "$evringd" --data-dir "$work/data/evring" --listen 127.0.0.1:0 \
                --addresses-file "$work/data.addr" \
                --set 'metrics_listen=""' --set 'resp_listen="127.0.0.1:0"' \
                >"$work/server.log" 2>&1 &
            pid=$!
            for _ in $(seq 1 600); do
                [ -s "$work/data.addr" ] && break
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            port=$(sed -n 's/^resp=.*://p' "$work/data.addr" 2>/dev/null || true)
            [ -n "$port" ] || { echo "evringd did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
            ;;
        redis-always | redis-nopersist)
            port=$(free_port)
            local persist=(--appendonly yes --appendfsync always)
            [ "$1" = redis-always ] || persist=(--appendonly no)
            redis-server --port "$port" --bind 127.0.0.1 --protected-mode no --daemonize no \
                --save '' --dir "$work/data" --logfile "$work/server.log" "${persist[@]}" \
                >/dev/null 2>&1 &
            pid=$!
            ;;
        floor-durable)
            "$evring_bench" floor --journal "$work/data/floor.dat" >"$work/server.log" 2>&1 &
            pid=$!
            port=
            for _ in $(seq 1 600); do
                port=$(sed -n 's/^listening on .*://p' "$work/server.log" 2>/dev/null || true)
                [ -n "$port" ] && break
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$port" ] || { echo "the floor did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
            ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
    wait_port "$port"
}

stop() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
}

for r in $(seq 1 "$rounds"); do
    echo "== round $r"
    for p in 1 16; do
        n=$n1
        [ "$p" = 1 ] || n=$n16
        for t in $targets; do
            start "$t"
            out=$(redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$n" -P "$p" -r 1000 --csv \
                XADD 's__rand_int__' '*' d "$value" 2>"$work/bench.err")
            # redis-benchmark does not look at replies: count the entries written (SCAN, then
            # XLEN of every stream), which must be every request sent.
            if [ "$t" = floor-durable ]; then
                # Its frames hold every XADD's bytes (more than 100 each), written from the
                # file's start (it is reused from its start only past 256 MiB).
                written=$(python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); print(len(d.rstrip(b"\0")))' "$work/data/floor.dat")
                entries=$n
                [ "$written" -ge $((n * 100)) ] || [ "$written" -ge $((200 << 20)) ] || entries="$written bytes journaled"
            else
                entries=$(redis-cli -h 127.0.0.1 -p "$port" --scan --pattern 's*' \
                    | sed 's/^/XLEN /' | redis-cli -h 127.0.0.1 -p "$port" \
                    | awk '{ s += $1 } END { print s + 0 }')
            fi
            stop
            if [ "$entries" != "$n" ]; then
                echo "$t -P $p: $entries entries after $n XADDs (errors?):" >&2
                cat "$work/bench.err" >&2
                exit 1
            fi
            python3 - "$t" "$p" "$out" "$work" <<'EOF'
import csv, io, sys
target, p, out, work = sys.argv[1:5]
rows = list(csv.reader(io.StringIO(out)))
head, row = rows[0], rows[-1]
d = dict(zip(head, row))
rps = float(d["rps"])
print(f"{target:16} -P {p:2} {rps:>12,.0f} req/s  p50 {d['p50_latency_ms']} ms  p99 {d['p99_latency_ms']} ms")
open(f"{work}/{target}.P{p}", "a").write(f"{rps}\n")
EOF
        done
    done
done

echo "== medians of $rounds rounds (requests/s), ratios evring-resp / peer per round and median"
python3 - "$work" "$targets" <<'EOF'
import os, statistics, sys
work, targets = sys.argv[1], sys.argv[2].split()
def load(t, p):
    path = f"{work}/{t}.P{p}"
    return [float(x) for x in open(path)] if os.path.exists(path) else []
for p in (1, 16):
    for t in targets:
        v = load(t, p)
        if v:
            print(f"-P {p:2} {t:16} median {statistics.median(v):>12,.0f}  rounds {' / '.join(f'{x:,.0f}' for x in v)}")
    e = load("evring-resp", p)
    for t in targets:
        if t == "evring-resp":
            continue
        o = load(t, p)
        if e and o:
            per = [a / b for a, b in zip(e, o)]
            print(f"-P {p:2} evring-resp / {t:16} {statistics.median(per):.2f}  rounds {' / '.join(f'{x:.2f}' for x in per)}")
EOF

#!/usr/bin/env bash
# Two evringd builds side by side: the same `evring-bench network` loads against build A and
# build B, interleaved round by round (A B A B …) so both see the same machine weather. A
# fresh data directory and a fresh server for every run.
#
#   scripts/ab-network.sh OLD_EVRINGD NEW_EVRINGD [ROUNDS]
#
# Prints one line per run (build, load, APPENDs/s, p50, p99), then the per-round ratios B / A
# and their median for each load. Needs `target/release/evring-bench` (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

a=${1:?usage: scripts/ab-network.sh OLD_EVRINGD NEW_EVRINGD [ROUNDS]}
b=${2:?usage: scripts/ab-network.sh OLD_EVRINGD NEW_EVRINGD [ROUNDS]}
rounds=${3:-3}
bench=./target/release/evring-bench
[ -x "$bench" ] || { echo "build evring-bench first: cargo build --release" >&2; exit 2; }
for bin in "$a" "$b"; do
    [ -x "$bin" ] || { echo "$bin: not an executable evringd" >&2; exit 2; }
done

work=$(mktemp -d ./target/ab-network.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# run BUILD_LABEL EVRINGD LOAD_LABEL BENCH_ARGS…: one fresh server, one bench run; prints
# "label load rate p50 p99" and appends the rate to $work/LABEL.LOAD.
run() {
    local label=$1 bin=$2 load=$3
    shift 3
    rm -rf "$work/data" "$work/data.addr"
    "$bin" --data-dir "$work/data" --listen 127.0.0.1:0 --addresses-file "$work/data.addr" \
        >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        [ -s "$work/data.addr" ] && break
        sleep 0.1
    done
    local addr
    addr=$(sed -n 's/^client=//p' "$work/data.addr")
    [ -n "$addr" ] || { echo "$label: evringd did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
    local out
    out=$("$bench" network --addr "$addr" --runs 1 --json "$@")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    python3 - "$label" "$load" "$out" "$work" <<'EOF'
import json, sys
label, load, out, work = sys.argv[1:5]
row = json.loads(out.strip().splitlines()[-1])
rate = row["requests/s"]
print(f"{label:4} {load:8} {rate:>12,.0f}/s  p50 {row['p50 ms']} ms  p99 {row['p99 ms']} ms")
open(f"{work}/{label}.{load}", "a").write(f"{rate}\n")
EOF
}

loads=("50x1:-c 50 -p 1" "50x16:-c 50 -p 16")
for r in $(seq 1 "$rounds"); do
    echo "== round $r"
    for l in "${loads[@]}"; do
        name=${l%%:*}
        args=${l#*:}
        # shellcheck disable=SC2086
        run A "$a" "$name" $args
        # shellcheck disable=SC2086
        run B "$b" "$name" $args
    done
done

echo "== B / A per round, and the median"
for l in "${loads[@]}"; do
    name=${l%%:*}
    python3 - "$work/A.$name" "$work/B.$name" "$name" <<'EOF'
import statistics, sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
ratios = [y / x for x, y in zip(a, b)]
print(f"{sys.argv[3]:8} A median {statistics.median(a):,.0f}/s  B median {statistics.median(b):,.0f}/s  "
      f"B/A {statistics.median(ratios):.2f} ({' / '.join(f'{r:.2f}' for r in ratios)})")
EOF
done

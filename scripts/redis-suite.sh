#!/usr/bin/env bash
# Redis 7.0.15's own stream test suite (redis-tests/) against a real evringd's RESP port.
#
#   scripts/redis-suite.sh [stream|cgroups|both]     (default: stream)
#
# Starts target/release/evringd (build it first: cargo build --release) on a fresh data
# directory with the RESP port on a free loopback port, runs the suite, stops the server by
# its PID. Installs tclsh (Debian package tcl) when it is missing and apt-get is there (as
# root or with passwordless sudo); otherwise it says what to install.
# Exit status 0 only when every selected test passed; the last line is 'N passed, M failed'.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-stream}
bin=target/release/evringd
[ -x "$bin" ] || { echo "$bin not found: run cargo build --release first" >&2; exit 1; }
if ! command -v tclsh >/dev/null; then
  # As root, or with passwordless sudo, install it; otherwise say how.
  sudo=
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "installing tcl (tclsh) for the Redis suite"
    ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq tcl) >/dev/null
  else
    echo "the Redis suite needs tclsh: install the tcl package (sudo apt-get install tcl)" >&2
    exit 1
  fi
fi
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# The RESP port on a free loopback port, read back from the addresses file.
"$bin" --data-dir "$work/data" --listen 127.0.0.1:0 --addresses-file "$work/addr" \
  --set metrics_listen='""' --set 'resp_listen="127.0.0.1:0"' --set pin_cpus=false \
  >"$work/evringd.log" 2>&1 &
pid=$!
port=
for _ in $(seq 200); do
  port=$(sed -n 's/^resp=127\.0\.0\.1://p' "$work/addr" 2>/dev/null || true)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/evringd.log"; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { echo "evringd wrote no RESP address"; cat "$work/evringd.log"; exit 1; }
log="$work/suite.log"
rc=0
SUITE_TIMEOUT_S="${SUITE_TIMEOUT_S:-600}" redis-tests/run-stream-suite.sh "$port" "$which" "$log" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- suite log (last 60 lines)"; tail -60 "$log" | sed 's/\x1b\[[0-9;]*m//g'
  echo "--- evringd log (last 20 lines)"; tail -20 "$work/evringd.log"
fi
exit "$rc"

#!/usr/bin/env bash
# Runs every test evring has: unit, integration (real files, real processes), fixtures,
# the durability rules' negative controls, Redis's own stream and consumer-group test suites
# on the RESP port,
# and the loom models of the partition ring.
set -euo pipefail
cd "$(dirname "$0")/.."
# evringd (glommio) needs at least 512 KiB of locked memory; most systems give 8 MiB.
if [ "$(ulimit -l)" != "unlimited" ] && [ "$(ulimit -l)" -lt 512 ]; then
  echo "ulimit -l is $(ulimit -l) KiB; evring needs at least 512 (run: ulimit -l 8192)" >&2
  exit 1
fi
cargo test --workspace --release
# Redis 7.0.15's own stream and consumer-group suites against the real evringd's RESP port
# (redis-tests/).
scripts/redis-suite.sh both
# The durability rules' negative controls: each rule broken once must fail the crash tests.
scripts/durability-mutants.sh
# Every fuzz target built and run briefly on its checked-in corpus (needs the nightly
# toolchain; skipped with a notice without one, unless REQUIRE_FUZZ is set, as in CI).
fuzz_rc=0
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" scripts/fuzz-smoke.sh || fuzz_rc=$?
if [ "$fuzz_rc" -eq 2 ] && [ -z "${REQUIRE_FUZZ:-}" ]; then
  echo "SKIPPED fuzz smoke: no nightly toolchain (see scripts/fuzz-smoke.sh)"
elif [ "$fuzz_rc" -ne 0 ]; then
  exit "$fuzz_rc"
fi
scripts/check-deb.sh
if [ -x loom-tests/run.sh ]; then
  loom-tests/run.sh
fi

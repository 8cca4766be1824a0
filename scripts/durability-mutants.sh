#!/usr/bin/env bash
# Negative controls for the journal's durability rules: the journal is built with one rule
# broken at a time (build.rs, EVRING_DURABILITY_MUTANT), and the simulated-disk crash tests
# (tests/journal_sim.rs) must fail against each. A rule whose break the suite does not catch
# fails this script.
#
#   ack_before_durable         a frame is acknowledged as soon as it is submitted
#   retry_after_fsync_failure  a failed fdatasync is retried and a success counts as durable
#   rewrite_acked_block        the torn-tail zeroing at recovery starts on an acknowledged block
#   drop_damaged_acked_frame   recovery truncates damage that a later frame proves acknowledged
#
# The mutant builds share the target directory (only the evring crate is rebuilt for each);
# the normal build is restored at the end, and a mutant evringd refuses to start anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
restore() {
  echo "== restoring the normal build"
  env -u EVRING_DURABILITY_MUTANT cargo build --release --workspace --quiet
}
trap restore EXIT
for mutant in ack_before_durable retry_after_fsync_failure rewrite_acked_block drop_damaged_acked_frame; do
  echo "== durability control: the journal built with \"$mutant\" must be caught"
  start=$(date +%s)
  log=$(mktemp)
  if EVRING_DURABILITY_MUTANT="$mutant" cargo test --release --test journal_sim >"$log" 2>&1; then
    tail -30 "$log"
    echo "NOT CAUGHT: tests/journal_sim.rs passes with the journal's \"$mutant\" rule broken" >&2
    exit 1
  fi
  if ! grep -q "test result: FAILED" "$log"; then
    tail -40 "$log"
    echo "tests/journal_sim.rs did not run with \"$mutant\" (see the build output above)" >&2
    exit 1
  fi
  failed=$(sed -n '/^failures:$/,/^test result/p' "$log" | grep -E '^    [a-z0-9_]+$' | sort -u | tr -d ' ' | paste -sd, -)
  echo "caught in $(( $(date +%s) - start ))s by: $failed"
  rm -f "$log"
done

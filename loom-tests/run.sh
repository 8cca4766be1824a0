#!/usr/bin/env bash
# Runs the loom models of the partition ring, then the negative controls: the same kind of
# model against deliberately broken rings, each of which must be caught.
#
# Timings on the 2-vCPU CI machine (one-time loom build not included):
#   LOOM_MAX_PREEMPTIONS=2: the four models take a few seconds in all.
#   LOOM_MAX_PREEMPTIONS=3: about ten times longer; run it by hand with PREEMPTIONS=3.
set -euo pipefail
cd "$(dirname "$0")/.."
PREEMPTIONS="${PREEMPTIONS:-2}"
export LOOM_MAX_PREEMPTIONS="$PREEMPTIONS"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
flags="--cfg evring_loom"

echo "== loom models (LOOM_MAX_PREEMPTIONS=$PREEMPTIONS)"
start=$(date +%s)
RUSTFLAGS="$flags" cargo test -p loom-tests --release --test ring
echo "models took $(( $(date +%s) - start ))s"

for mutant in no_recheck no_release_fence no_evict_mark; do
  echo "== negative control: ring built with evring_mutant=\"$mutant\" must be caught"
  start=$(date +%s)
  RUSTFLAGS="$flags --cfg evring_mutant=\"$mutant\"" \
    cargo test -p loom-tests --release --test mutants
  echo "mutant $mutant caught in $(( $(date +%s) - start ))s"
done

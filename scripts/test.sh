#!/usr/bin/env bash
# Runs every test evring has: unit, integration (real files, real processes), fixtures,
# and the loom models of the partition ring when present.
set -euo pipefail
cd "$(dirname "$0")/.."
# glommio needs at least 512 KiB of locked memory; most systems give 8 MiB.
if [ "$(ulimit -l)" != "unlimited" ] && [ "$(ulimit -l)" -lt 1024 ]; then
  echo "ulimit -l is $(ulimit -l) KiB; evring's tests need at least 1024 (run: ulimit -l 8192)" >&2
  exit 1
fi
cargo test --workspace --release
scripts/check-deb.sh
if [ -x loom-tests/run.sh ]; then
  loom-tests/run.sh
fi

#!/usr/bin/env bash
# Writes the manual pages of evringd, evring and evring-inspect to target/man/ (roff, from
# each program's own --help text). View one with: man -l target/man/evringd.1
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
mkdir -p target/man
for bin in evringd evring evring-inspect; do
  ./target/release/$bin --print-man > "target/man/$bin.1"
done
echo "manual pages in target/man/"

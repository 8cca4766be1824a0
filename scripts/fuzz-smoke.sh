#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, cargo-fuzz on the nightly toolchain) and runs each for a
# short time on its checked-in corpus (fuzz/corpus/<target>/): the targets build, the corpus
# replays without a crash, and a short run finds none. Inputs a run discovers go to a
# scratch directory, not into the corpus. A crash fails the script (libFuzzer writes the
# input to fuzz/artifacts/<target>/).
#
#   scripts/fuzz-smoke.sh                 # 20 s per target
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
#
# Needs the nightly toolchain; installs cargo-fuzz (cargo +nightly install cargo-fuzz) when
# it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz-smoke: no nightly toolchain; cargo-fuzz needs one (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz is missing; installing it (cargo +nightly install cargo-fuzz --locked)" >&2
  cargo +nightly install cargo-fuzz --locked
fi
cd fuzz
targets=$(cargo +nightly fuzz list)
for t in $targets; do
  if [ -z "$(ls -A "corpus/$t" 2>/dev/null)" ]; then
    echo "fuzz-smoke: no checked-in corpus for $t (fuzz/corpus/$t)" >&2
    exit 1
  fi
done
started=$SECONDS
cargo +nightly fuzz build
echo "fuzz-smoke: built $(echo $targets | wc -w) targets in $((SECONDS - started)) s"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $targets; do
  mkdir -p "$scratch/$t"
  echo "fuzz-smoke: $t, ${seconds} s, from $(ls "corpus/$t" | wc -l) inputs"
  # The first directory receives new inputs; the checked-in corpus is only read.
  cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1
done
echo "fuzz-smoke: every target ran ${seconds} s without a crash ($((SECONDS - started)) s in all)"

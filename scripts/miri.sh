#!/usr/bin/env bash
# Runs the ring's unit tests (including the reader/writer thread stress test and the owner's
# in-place views) under Miri, which checks the unsafe code and reports data races.
# Needs the nightly toolchain with the miri component:
#   rustup component add --toolchain nightly miri rust-src
# About 20 s of tests after a few minutes of one-time sysroot and dependency builds.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/miri" cargo +nightly miri test -p loom-tests --lib "$@"

#!/usr/bin/env bash
# Builds evring and starts evringd on its embedded defaults (data in ./evring-data).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
exec ./target/release/evringd "$@"

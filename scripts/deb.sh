#!/usr/bin/env bash
# Builds the Debian package target/debian/evring_*.deb: release binaries, manual pages, the
# systemd unit with its sysusers/tmpfiles snippets, and /etc/evring/evring.toml.
# Installs cargo-deb (from crates.io) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
scripts/man.sh
cargo deb --no-build -p evring
ls target/debian/*.deb

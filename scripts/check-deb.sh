#!/usr/bin/env bash
# Builds the Debian package (scripts/deb.sh) and checks that it holds what an install needs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dpkg-deb >/dev/null; then
  echo "dpkg-deb is not installed (not a Debian-family system): skipping the package check"
  exit 0
fi
scripts/deb.sh >/dev/null
deb=$(ls -t target/debian/evring_*.deb | head -1)
contents=$(dpkg-deb -c "$deb")
missing=0
for path in ./usr/bin/evringd ./usr/bin/evring ./usr/bin/evring-inspect \
    ./lib/systemd/system/evringd.service ./usr/lib/sysusers.d/evring.conf \
    ./usr/lib/tmpfiles.d/evring.conf ./etc/evring/evring.toml \
    ./usr/share/man/man1/evringd.1.gz ./usr/share/man/man1/evring.1.gz \
    ./usr/share/man/man1/evring-inspect.1.gz ./usr/share/doc/evring/OPERATIONS.md; do
  if ! grep -q " $path\$" <<<"$contents"; then
    echo "missing from $deb: $path" >&2
    missing=1
  fi
done
dpkg-deb -f "$deb" Package Version Depends | sed 's/^/  /'
dpkg-deb -I "$deb" conffiles | grep -qx /etc/evring/evring.toml || {
  echo "/etc/evring/evring.toml is not a conffile" >&2
  missing=1
}
[ "$missing" = 0 ] && echo "package ok: $deb"
exit "$missing"

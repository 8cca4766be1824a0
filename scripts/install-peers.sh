#!/usr/bin/env bash
# Installs the servers `evring-bench compare` runs against, from apt, when missing:
# redis-server (Redis Streams) and PostgreSQL. The harness starts its own instances on
# loopback in temporary directories; the packages' own services are not used.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
    echo "redis-server and PostgreSQL are installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"

#!/usr/bin/env bash
# The project's copy of the team tool (shared/tools): builds PgBouncer 1.24 (transaction pooling with protocol-level prepared statements, max_prepared_statements)
# from Debian trixie's source package, once, into /usr/local/lib/pgbouncer-trixie; prints the path of the pgbouncer binary.
# Debian 12 ships PgBouncer 1.18, which predates prepared-statement support in transaction mode.
# Needs root (apt) on Debian. Usage: BIN=$(../shared/tools/pgbouncer-build.sh)
# PgBouncer refuses to run as root: start it as the postgres user (runuser -u postgres -- "$BIN" pgbouncer.ini).
set -euo pipefail
# Installed outside $HOME so that the postgres user can run it.
CACHE=${PGBOUNCER_PREFIX:-/usr/local/lib/pgbouncer-trixie}
BIN=$CACHE/inst/bin/pgbouncer
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
SRC=/etc/apt/sources.list.d/trixie-src.sources
if ! grep -rqs "trixie" /etc/apt/sources.list.d/ 2>/dev/null; then
  cat > "$SRC" <<'SRCS'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRCS
fi
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends libevent-dev libssl-dev pkg-config gcc make dpkg-dev >/dev/null
mkdir -p "$CACHE/src" && cd "$CACHE/src"
apt-get source --download-only pgbouncer >/dev/null 2>&1
tar xzf pgbouncer_*.orig.tar.gz
cd pgbouncer-*/
./configure --prefix="$CACHE/inst" --without-cares --without-systemd >/dev/null
make -j"$(nproc)" >/dev/null
make install >/dev/null
"$BIN" --version >/dev/null
echo "$BIN"

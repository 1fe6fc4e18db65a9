# Shared by the proxy's bench scripts (sourced after they set HERE): paths, the release build, running as
# the postgres user, a throwaway cluster with pgbench's tables, and how pgbench's sessions carry context.

BIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PROXY_BIN=$TARGET/release/examples/proxy
TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

build_proxy() {
  echo "building the proxy (release)..." >&2
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p sqlcommenter-proxy --example proxy)
}

# How every pgbench session carries trace context (CONTEXT), the same for every target: options:
# `PGOPTIONS=-c sqlcommenter.traceparent=…` (the proxy comments every simple/unnamed statement and writes the
# application_name carrier before every named execution; PgBouncer must ignore the parameter), appname:
# `PGAPPNAME=<traceparent>` (the server holds it from the startup: named executions need no carrier), none.
carry_context() {
  case ${CONTEXT:-options} in
    options) export PGOPTIONS="-c sqlcommenter.traceparent=$TRACEPARENT" ;;
    appname) export PGAPPNAME=$TRACEPARENT ;;
    none) ;;
    *) echo "CONTEXT must be options, appname or none" >&2; exit 2 ;;
  esac
}

# A work directory /tmp/PREFIX.XXXXXX in WORK, usable by the postgres user.
make_work() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$WORK"
  if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
}

# start_cluster PORT SCALE [setting ...]: a throwaway cluster in $WORK/data on 127.0.0.1:PORT (socket in
# $WORK, fsync off, the given `name = value` settings), with pgbench's tables at SCALE.
start_cluster() {
  local port=$1 scale=$2
  shift 2
  as_pg "$BIN/initdb" -D "$WORK/data" -U postgres -A trust >/dev/null
  {
    printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$port" "$WORK"
    printf "fsync = off\nsynchronous_commit = off\n"
    for s in "$@"; do printf '%s\n' "$s"; done
  } >>"$WORK/data/postgresql.conf"
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null
  "$BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s "$scale" -q postgres >/dev/null 2>&1
}

# CPU clock ticks the cluster in $WORK/data has used so far: the postmaster, its live processes (the backends)
# and those it has reaped. The difference across a pgbench run is the server's work for it.
server_ticks() {
  local pm
  pm=$(head -1 "$WORK/data/postmaster.pid")
  {
    awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
    for c in $(pgrep -P "$pm"); do awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true; done
  } | awk '{s += $1} END {print s + 0}'
}

stop_cluster() {
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
}

# Which sockets every leg uses (SOCKETS): tcp (default) on 127.0.0.1, or unix: pgbench reaches PostgreSQL,
# PgBouncer and the proxy on their socket files in $WORK, and they reach PostgreSQL on its socket (a host on
# one machine). The host to give a client or a middle process:
host() {
  case ${SOCKETS:-tcp} in
    tcp) echo 127.0.0.1 ;;
    unix) echo "$WORK" ;;
    *) echo "SOCKETS must be tcp or unix" >&2; exit 2 ;;
  esac
}

# pgbouncer_config SERVER_PORT LISTEN_PORT [setting ...]: $WORK/pgbouncer.ini (session pooling, trust, the
# `options` startup parameter ignored, the server and its own socket per SOCKETS, the given `name = value`
# settings) and its users file.
pgbouncer_config() {
  local server=$1 listen=$2
  shift 2
  {
    printf '[databases]\npostgres = host=%s port=%s dbname=postgres\n[pgbouncer]\n' "$(host)" "$server"
    printf 'listen_addr = 127.0.0.1\nlisten_port = %s\nunix_socket_dir = %s\n' "$listen" "$([ "${SOCKETS:-tcp}" = tcp ] || echo "$WORK")"
    printf 'auth_type = trust\nauth_file = %s/users.txt\npool_mode = session\n' "$WORK"
    printf 'ignore_startup_parameters = options\nlogfile = %s/pgbouncer.log\n' "$WORK"
    for s in "$@"; do printf '%s\n' "$s"; done
  } >"$WORK/pgbouncer.ini"
  echo '"postgres" ""' >"$WORK/users.txt"
  if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"/pgbouncer.ini "$WORK"/users.txt; fi
}

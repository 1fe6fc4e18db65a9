#!/usr/bin/env bash
# PostgreSQL 15's own regression suite (pg_regress, parallel_schedule, installcheck against a running server),
# directly and through the sqlcommenter proxy, each run on a fresh throwaway cluster; prints per mode the tests
# that pass directly but not through the proxy, with an excerpt of each one's regression.diffs section.
# Usage: proxy/suites/pg_regress.sh ; env
#   MODES    default "direct proxy context roots otlp unix":
#              direct          psql -> server
#              direct-context  psql -> server with the context mode's PGOPTIONS (a control for `context`)
#              proxy           psql -> proxy as shipped (no client context)
#              context         psql -> proxy with PGOPTIONS='-c sqlcommenter.traceparent=00-…-01' (session context)
#              roots           psql -> proxy --root-contexts true (a fresh root context per transaction, injected)
#              otlp            psql -> proxy exporting a span per statement (--otlp true) to a local OTLP/HTTP sink
#              unix            psql -> the proxy's Unix socket (--listen-socket) -> the server's Unix socket, with
#                              the context mode's PGOPTIONS
#   TESTS    test names to run instead of the schedule (test_setup and create_index etc. are prerequisites of
#            many tests: e.g. TESTS="test_setup create_index errors")
#   PROXY_ARGS extra proxy flags; PROFILE release|debug (default release); EXCERPT lines per diff (default 40);
#   RESULTS  folder for every mode's regression.out/regression.diffs (default /tmp/sqlc-pg-regress.<time>, kept).
# Sources: Debian's postgresql-15 source package (needs root for apt), prepared once into
# /usr/local/lib/sqlc-pg-regress/<version> (SQL, expected, data files; regress.so, autoinc.so, refint.so built
# with pgxs from postgresql-server-dev-15). Exit 0 when every test that passes directly passes in every proxy mode.
set -euo pipefail

MODES=${MODES:-"direct proxy context roots otlp unix"}
PROFILE=${PROFILE:-release}
EXCERPT=${EXCERPT:-40}
BIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$BIN/pg_config
CACHE=${PG_REGRESS_CACHE:-/usr/local/lib/sqlc-pg-regress}
TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-/tmp/sqlc-pg-regress.$(date -u +%Y%m%dT%H%M%S)}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# --- sources: Debian's postgresql-15 source package, once --------------------------------------------------
prepare() { # -> prints the prepared folder
  local installed want dir
  installed=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
  for dir in "$CACHE"/*/; do # the installed server's version when it is there, else whatever is prepared
    if [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$installed" ]; then echo "${dir%/}"; return; fi
  done
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs "^Types: deb-src" /etc/apt/sources.list.d/ || ! grep -rqs "bookworm" /etc/apt/sources.list.d/*src*; then
    cat > /etc/apt/sources.list.d/bookworm-src.sources <<'SRCS'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRCS
  fi
  apt-get update -qq >/dev/null
  # postgresql-client-15 ships pgxs.mk and pg_regress but not the server headers: test for those.
  [ -f "$("$PG_CONFIG" --includedir-server 2>/dev/null || echo /nonexistent)/postgres.h" ] ||
    apt-get install -y -qq --no-install-recommends postgresql-server-dev-15 >/dev/null
  command -v dpkg-source >/dev/null || apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
  command -v gcc >/dev/null || apt-get install -y -qq --no-install-recommends gcc make >/dev/null
  local tmp; tmp=$(mktemp -d /tmp/sqlc-pg-src.XXXXXX)
  # The installed server's version first; a mirror may lack it (security updates' sources), then the newest one.
  want=""
  for v in "$installed" $(apt-cache showsrc postgresql-15 | sed -n 's/^Version: //p' | sort -rV); do
    [ -n "$v" ] || continue
    if (cd "$tmp" && apt-get source --download-only "postgresql-15=$v" >/dev/null 2>&1); then want=$v; break; fi
    rm -f "$tmp"/*
  done
  [ -n "$want" ] || { echo "no postgresql-15 source package could be downloaded" >&2; exit 1; }
  [ "$want" = "$installed" ] || log "sources $want (the server is $installed: expected outputs may differ in places)"
  dir=$CACHE/$want
  rm -rf "$dir" && mkdir -p "$dir/lib" "$dir/build"
  local upstream=${want%%-*}
  tar -C "$tmp" -xjf "$tmp"/postgresql-15_"$upstream".orig.tar.bz2 \
    "postgresql-$upstream/src/test/regress" "postgresql-$upstream/contrib/spi"
  local src=$tmp/postgresql-$upstream
  cp -r "$src/src/test/regress" "$dir/regress"
  cp "$src/src/test/regress/regress.c" "$src/contrib/spi/autoinc.c" "$src/contrib/spi/refint.c" "$dir/build/"
  printf 'MODULES = regress autoinc refint\nPG_CONFIG = %s\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' \
    "$PG_CONFIG" > "$dir/build/Makefile"
  make -s -C "$dir/build" >/dev/null
  cp "$dir/build/"*.so "$dir/lib/"
  chmod -R a+rX "$dir"
  rm -rf "$tmp"
  echo "$installed" > "$dir/ready" # prepared for this server version (from the sources named by the folder)
  echo "$dir"
}

PREP=$(prepare)
PG_REGRESS=$("$PG_CONFIG" --pgxs | xargs dirname)/../test/regress/pg_regress
log "commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- proxy/src src 2>/dev/null || echo ' (proxy/src or src modified)')"
log "sources: $PREP ($(basename "$PREP")); pg_regress: $PG_REGRESS ($("$BIN/postgres" --version))"

# --- the proxy --------------------------------------------------------------------------------------------
flag=$([ "$PROFILE" = release ] && echo --release || true)
log "building the proxy ($PROFILE)..."
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q $flag -p sqlcommenter-proxy --example proxy)
PROXY_BIN=$TARGET/$PROFILE/examples/proxy

WORK=$(mktemp -d /tmp/sqlc-pg-regress-work.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$RESULTS" && chmod 777 "$RESULTS"
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
PGPORT_=""; PROXY_PID=""; SINK_PID=""
stop_cluster() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
  if [ -d "$WORK/data" ]; then as_pg "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK/data"
}
cleanup() {
  stop_cluster
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# A fresh cluster per mode: the suite leaves objects behind when a test fails, and the next mode must not see them.
start_cluster() {
  PGPORT_=$(free_port)
  as_pg "$BIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --locale=C -N >/dev/null
  # What pg_regress writes for its own temporary instance (`make check`), plus speed.
  cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PGPORT_
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 100
max_prepared_transactions = 2
log_autovacuum_min_duration = 0
log_checkpoints = on
log_lock_waits = on
log_temp_files = 128kB
log_line_prefix = '%m %a [%p] '
log_min_error_statement = panic
log_statement = all
log_connections = on
fsync = off
jit = off
CONF
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg-$1.log" -w start >/dev/null
}

start_proxy() { # extra flags...; env UPSTREAM_ADDR (default the server's TCP address)
  PROXY_PORT=$(free_port)
  # shellcheck disable=SC2086
  "$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "${UPSTREAM_ADDR:-127.0.0.1:$PGPORT_}" --admin off "$@" ${PROXY_ARGS:-} \
    >>"$RESULTS/proxy.log" 2>&1 &
  PROXY_PID=$!
  wait_port "$PROXY_PORT" || { echo "the proxy did not start (see $RESULTS/proxy.log)" >&2; exit 1; }
}

# A local OTLP/HTTP receiver that accepts every export and counts requests (the spans' content is the
# proxy's own tests' business; here export must merely happen and not disturb the client).
start_sink() {
  rm -f "$RESULTS/otlp-sink.port"
  python3 - "$RESULTS/otlp-sink.port" "$RESULTS/otlp-sink.count" <<'PY' &
import os, sys, http.server
portfile, out = sys.argv[1], sys.argv[2]
count = [0, 0]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        count[0] += 1; count[1] += n
        open(out, "w").write(f"{count[0]} {count[1]}\n")
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)  # a free port, told through the file
open(portfile + ".tmp", "w").write(f"{srv.server_address[1]}\n"); os.rename(portfile + ".tmp", portfile)
srv.serve_forever()
PY
  SINK_PID=$!
  for _ in $(seq 100); do [ -s "$RESULTS/otlp-sink.port" ] && break; sleep 0.1; done
  SINK_PORT=$(cat "$RESULTS/otlp-sink.port" 2>/dev/null) || { echo "the OTLP sink did not start" >&2; exit 1; }
}

# Client statements in a server log (log_statement = all, log_line_prefix '%m %a [%p] ') and how many carry a
# trace context: a traceparent in their text (comment) or in %a (the carrier); the proxy's own carrier
# statements (`SELECT pg_catalog.set_config($1, $2, $3)`) counted apart. -> "statements with_context proxy_own"
logged() {
  python3 - "$1" <<'PY'
import re, sys
start = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ ")
tp = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
records, cur = [], []
for line in open(sys.argv[1], errors="replace"):
    if start.match(line) and cur:
        records.append("".join(cur)); cur = []
    cur.append(line)
records.append("".join(cur))
stmts = ctx = own = 0
for r in records:
    if "LOG:  statement: " not in r and "LOG:  execute " not in r:
        continue
    if "pg_catalog.set_config($1, $2, $3)" in r:
        own += 1
        continue
    stmts += 1
    ctx += bool(tp.search(r))
print(stmts, ctx, own)
PY
}

run_mode() { # mode -> results in $RESULTS/$mode
  local mode=$1 port options="" host=127.0.0.1 t0
  stop_cluster
  start_cluster "$mode"
  case $mode in
    direct) port=$PGPORT_ ;;
    direct-context) port=$PGPORT_; options="-c sqlcommenter.traceparent=$TRACEPARENT" ;;
    proxy) start_proxy; port=$PROXY_PORT ;;
    context) start_proxy; port=$PROXY_PORT; options="-c sqlcommenter.traceparent=$TRACEPARENT" ;;
    roots) start_proxy --root-contexts true; port=$PROXY_PORT ;;
    unix)
      UPSTREAM_ADDR=$WORK:$PGPORT_ start_proxy --listen-socket "$WORK"; port=$PROXY_PORT; host=$WORK
      options="-c sqlcommenter.traceparent=$TRACEPARENT" ;;
    otlp)
      [ -n "$SINK_PID" ] || start_sink
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT OTEL_BSP_SCHEDULE_DELAY=200 start_proxy --otlp true
      port=$PROXY_PORT ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  local out=$RESULTS/$mode
  rm -rf "$out" && mkdir -p "$out" && chmod 777 "$out"
  local what=(--schedule="$PREP/regress/parallel_schedule")
  # shellcheck disable=SC2206
  [ -z "${TESTS:-}" ] || what=($TESTS)
  t0=$(date +%s)
  # As the postgres user: the server reads the data files and writes into the output folder (COPY TO/FROM).
  (cd "$out" && as_pg env PGOPTIONS="$options" timeout 1800 "$PG_REGRESS" \
     --inputdir="$PREP/regress" --outputdir="$out" --bindir="$BIN" --dlpath="$PREP/lib" \
     --max-concurrent-tests=20 \
     --host="$host" --port="$port" --user=postgres "${what[@]}" >"$out/pg_regress.out" 2>&1) || true
  echo $(( $(date +%s) - t0 )) > "$out/seconds"
    local logf=$WORK/pg-$mode.log
  logged "$logf" > "$out/logged"
  if [ -n "${KEEP:-}" ]; then cp "$logf" "$out/server.log"; fi
  # "test name ... ok   12 ms", "     name ... FAILED   12 ms", "... failed (ignored)"
  sed -nE 's/^(test +| +)([A-Za-z0-9_.]+) +\.\.\. +(ok|FAILED|failed \(ignored\)).*/\2 \3/p' "$out/pg_regress.out" \
    | sed 's/failed (ignored)/ignored/' | LC_ALL=C sort > "$out/status"
  awk '$2 == "ok" {print $1}' "$out/status" > "$out/passed"
}

excerpt() { # mode test -> that test's section of regression.diffs, at most EXCERPT lines
  awk -v t="$2" -v max="$EXCERPT" '
    /^diff / { on = ($0 ~ ("/expected/" t "(_[0-9])?\\.out ")); n = 0 }
    on && n < max { print "    " $0; n++ }' "$RESULTS/$1/regression.diffs" 2>/dev/null
}

status=0
for mode in $MODES; do
  log "mode $mode..."
  run_mode "$mode"
  out=$RESULTS/$mode
  if [ ! -s "$out/status" ]; then
    echo "$mode: no results (see $out/pg_regress.out)"; tail -5 "$out/pg_regress.out"; status=1; continue
  fi
  echo "$mode: $(wc -l < "$out/passed") passed of $(wc -l < "$out/status") tests in $(cat "$out/seconds") s" \
    "($(grep -c ' FAILED$' "$out/status" || true) failed, $(grep -c ' ignored$' "$out/status" || true) failed but ignored)"
  case $mode in
    direct)
      failed=$(awk '$2 != "ok" {printf "%s ", $1}' "$out/status")
      [ -z "$failed" ] || echo "  failing directly: $failed" ;;
    *)
      if [ -f "$RESULTS/direct/passed" ]; then
        lost=$(LC_ALL=C comm -23 "$RESULTS/direct/passed" "$out/passed")
        if [ -n "$lost" ]; then
          echo "  passed directly, not through the proxy ($mode): $(echo "$lost" | wc -l)"
          for t in $lost; do echo "  - $t"; excerpt "$mode" "$t"; done
          status=1
        fi
        gained=$(LC_ALL=C comm -13 "$RESULTS/direct/passed" "$out/passed")
        [ -z "$gained" ] || echo "  passed through the proxy, not directly: $(echo "$gained" | tr '\n' ' ')"
      fi ;;
  esac
  read -r nstmt nctx nown < "$out/logged"
  echo "  server log: $nctx of $nstmt client statements carry a trace context (+ $nown carrier statements of the proxy)"
  echo "  server log: $(grep -c 'connection received: host=\[local\]' "$WORK/pg-$mode.log" || true) connections over the Unix socket," \
    "$(grep -c 'connection received: host=127' "$WORK/pg-$mode.log" || true) over TCP"
  [ "$mode" != otlp ] || echo "  OTLP sink: $(cat "$RESULTS/otlp-sink.count" 2>/dev/null || echo "0 0") (export requests, bytes)"
done
stop_cluster
echo "results (regression.out/.diffs per mode, the proxy log; server logs with KEEP=1): $RESULTS"
exit $status

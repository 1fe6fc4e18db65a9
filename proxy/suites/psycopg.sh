#!/usr/bin/env bash
# psycopg 3's own test suite, directly against PostgreSQL and through the sqlcommenter proxy (PSYCOPG_TEST_DSN
# pointed at one or the other), each mode on a fresh throwaway cluster; prints per mode the tests that pass
# directly but not through the proxy, with the first lines of each failure.
# Usage: proxy/suites/psycopg.sh PSYCOPG_REPO ; PSYCOPG_REPO is psycopg's git repository (a clone, or the bare
#   copy the `fetch` tool brings: /work/.mirror/psycopg+psycopg/repo). env
#   PSYCOPG_TAG  the tag to test (default 3.3.4)
#   MODES        default "direct relay proxy otlp" (also: context, roots; see proxy/suites/README.md); direct and
#                relay run first, whatever the order given. relay is a control: a plain TCP relay (socat, or a
#                few lines of Python without socat) in front of the same cluster; a test it loses too is
#                reported as "timing: lost by any relay" and does not count as a proxy loss
#   PYTEST_ARGS  default "tests -m 'not slow'"; e.g. "tests" for everything, "tests/test_prepared.py"
#   PROXY_ARGS, PROFILE (release|debug), RESULTS (default /tmp/sqlc-psycopg.<time>, kept), TIMEOUT per test (60 s)
# The tag's tests, psycopg[binary,test] of the same version from PyPI and the tag's psycopg_pool go into a venv
# under /usr/local/lib/sqlc-psycopg/<tag> (prepared once). Exit 0 when every direct pass passes in every proxy mode
# or is lost through the control relay too.
set -euo pipefail

REPO=${1:?usage: psycopg.sh PSYCOPG_REPO}
MODES=${MODES:-"direct relay proxy otlp"}
PROFILE=${PROFILE:-release}
TIMEOUT=${TIMEOUT:-60}
PYTEST_ARGS=${PYTEST_ARGS:-"tests -m 'not slow'"}
BIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
CACHE=${PSYCOPG_CACHE:-/usr/local/lib/sqlc-psycopg}
TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-/tmp/sqlc-psycopg.$(date -u +%Y%m%dT%H%M%S)}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
git_() { if [ -d "$REPO/.git" ]; then git -C "$REPO" "$@"; else git --git-dir="$REPO" "$@"; fi; }

# --- the suite: the tag's tests and a venv with that psycopg version ----------------------------------------
# Pinned: the version issue 12's figures are for (the system's psycopg, if any, plays no part: the suite runs in
# its own venv with the same version from PyPI).
TAG=${PSYCOPG_TAG:-3.3.4}
git_ rev-parse -q --verify "refs/tags/$TAG" >/dev/null || { echo "no tag $TAG in $REPO" >&2; exit 1; }
SUITE=$CACHE/$TAG
if [ ! -f "$SUITE/ready" ]; then
  log "preparing psycopg $TAG's suite in $SUITE..."
  rm -rf "$SUITE" && mkdir -p "$SUITE"
  git_ archive "$TAG" tests tools psycopg_pool pyproject.toml | tar -x -C "$SUITE"
  python3 -m venv "$SUITE/venv"
  "$SUITE/venv/bin/pip" install -q "psycopg[binary,test]==$TAG" "$SUITE/psycopg_pool" pytest-timeout
  echo "$TAG" > "$SUITE/ready"
fi
log "psycopg suite $TAG (the venv's psycopg: $("$SUITE/venv/bin/python" -c 'import psycopg; print(psycopg.__version__, psycopg.pq.__impl__, psycopg.pq.version())'))"
log "commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- proxy/src src 2>/dev/null || echo ' (proxy/src or src modified)')"

# --- the proxy --------------------------------------------------------------------------------------------
flag=$([ "$PROFILE" = release ] && echo --release || true)
log "building the proxy ($PROFILE)..."
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q $flag -p sqlcommenter-proxy --example proxy)
PROXY_BIN=$TARGET/$PROFILE/examples/proxy

WORK=$(mktemp -d /tmp/sqlc-psycopg-work.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$RESULTS"
rm -f "$RESULTS/relay.lost"
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
PGPORT_=""; PROXY_PID=""; RELAY_PID=""; SINK_PID=""
stop_cluster() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null || true
  PROXY_PID=""; RELAY_PID=""
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

start_cluster() { # mode
  PGPORT_=$(free_port)
  as_pg "$BIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --locale=C -N >/dev/null
  # max_prepared_transactions: the two-phase-commit tests; the rest as psycopg's CI leaves it.
  cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PGPORT_
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 100
max_prepared_transactions = 10
log_line_prefix = '%m %a [%p] '
log_statement = all
log_min_error_statement = panic
fsync = off
jit = off
CONF
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg-$1.log" -w start >/dev/null
  as_pg "$BIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT_" -U postgres -d postgres -c "CREATE DATABASE psycopg_test"
}

start_proxy() { # extra flags...
  PROXY_PORT=$(free_port)
  # shellcheck disable=SC2086
  "$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$PGPORT_" --admin off "$@" ${PROXY_ARGS:-} \
    >>"$RESULTS/proxy.log" 2>&1 &
  PROXY_PID=$!
  wait_port "$PROXY_PORT" || { echo "the proxy did not start (see $RESULTS/proxy.log)" >&2; exit 1; }
}

# The control relay: bytes moved as they are, one more TCP hop (TCP_NODELAY on both legs, as the proxy sets).
. "$HERE/lib.sh"

# A local OTLP/HTTP receiver that accepts every export and counts requests and bytes.
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

run_mode() { # mode -> $RESULTS/$mode.xml
  local mode=$1 port options="" t0
  stop_cluster
  start_cluster "$mode"
  case $mode in
    direct) port=$PGPORT_ ;;
    relay) start_relay; port=$RELAY_PORT ;;
    proxy) start_proxy; port=$PROXY_PORT ;;
    context) start_proxy; port=$PROXY_PORT; options="-c sqlcommenter.traceparent=$TRACEPARENT" ;;
    roots) start_proxy --root-contexts true; port=$PROXY_PORT ;;
    otlp)
      [ -n "$SINK_PID" ] || start_sink
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT OTEL_BSP_SCHEDULE_DELAY=200 start_proxy --otlp true
      port=$PROXY_PORT ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  t0=$(date +%s)
  # Fixed order (no pytest-randomly shuffle) so that the modes run the same sequence; the suite's own
  # conftest needs pytest's cache plugin (it keeps a segfault flag there): a cache folder per run instead.
  (cd "$SUITE" && PSYCOPG_TEST_DSN="host=127.0.0.1 port=$port user=postgres dbname=psycopg_test" \
     PGOPTIONS="$options" PATH="$SUITE/venv/bin:$PATH" timeout 3600 bash -c "venv/bin/python -m pytest -p no:randomly \
       -o cache_dir='$WORK/cache-$mode' -q --timeout=$TIMEOUT --junitxml='$RESULTS/$mode.xml' $PYTEST_ARGS" \
     >"$RESULTS/$mode.out" 2>&1) || true
  echo $(( $(date +%s) - t0 )) > "$RESULTS/$mode.seconds"
  local logf=$WORK/pg-$mode.log
  logged "$logf" > "$RESULTS/$mode.logged"
  if [ -n "${KEEP:-}" ]; then cp "$logf" "$RESULTS/$mode.server.log"; fi
}

summary() { # xml -> "passed failed skipped"; writes xml.passed and xml.failures (name, then indented excerpt)
  python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
passed, failed, skipped, why = set(), set(), set(), {}
for tc in root.iter("testcase"):
    name = f"{tc.get('classname')}::{tc.get('name')}"
    bad = [c for c in tc if c.tag in ("failure", "error")]
    if bad:
        failed.add(name)
        text = (bad[0].get("message") or "") + "\n" + (bad[0].text or "")
        lines = [l for l in text.splitlines() if l.strip()]
        # The message, then the traceback's last lines ("E   ..." and where it was raised).
        tail = [l for l in lines[1:] if l.startswith("E ")][-8:]
        why[name] = [lines[0][:300] if lines else ""] + [l[:300] for l in tail]
    elif any(c.tag == "skipped" for c in tc):
        skipped.add(name)
    else:
        passed.add(name)
print(len(passed), len(failed), len(skipped))
with open(sys.argv[1] + ".passed", "w") as f:
    f.write("".join(n + "\n" for n in sorted(passed)))
with open(sys.argv[1] + ".failures", "w") as f:
    for n in sorted(why):
        f.write(n + "\n" + "".join("    " + l + "\n" for l in why[n]))
PY
}


# direct and relay first: the proxy modes' losses are compared with both.
ORDERED=$(for m in direct relay; do case " $MODES " in *" $m "*) echo "$m" ;; esac; done
          for m in $MODES; do case $m in direct | relay) ;; *) echo "$m" ;; esac; done)
status=0
for mode in $ORDERED; do
  log "mode $mode..."
  run_mode "$mode"
  xml=$RESULTS/$mode.xml
  if [ ! -s "$xml" ]; then echo "$mode: no results (see $RESULTS/$mode.out)"; tail -5 "$RESULTS/$mode.out"; status=1; continue; fi
  read -r p f s < <(summary "$xml")
  read -r nstmt nctx nown < "$RESULTS/$mode.logged"
  echo "$mode: passed $p, failed $f, skipped $s in $(cat "$RESULTS/$mode.seconds") s"
  echo "  server log: $nctx of $nstmt client statements carry a trace context (+ $nown carrier statements of the proxy)"
  if [ "$mode" != direct ] && [ -f "$RESULTS/direct.xml.passed" ]; then
    compare "$RESULTS/direct.xml.passed" "$xml" "$mode" "" || status=1
  fi
  [ "$mode" != otlp ] || echo "  OTLP sink: $(cat "$RESULTS/otlp-sink.count" 2>/dev/null || echo "0 0") (export requests, bytes)"
done
stop_cluster
echo "results (junit xml, pytest output, proxy log; server logs with KEEP=1): $RESULTS"
exit $status

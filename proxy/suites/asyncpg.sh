#!/usr/bin/env bash
# asyncpg's own test suite, directly against PostgreSQL and through the sqlcommenter proxy, each mode on a fresh
# throwaway cluster; prints per mode the tests that pass directly but not through the proxy, with the first lines
# of each failure. asyncpg's tests are not on PyPI: they come from its source repository.
# Usage: proxy/suites/asyncpg.sh ASYNCPG_REPO [RUNS] ; ASYNCPG_REPO is asyncpg's git repository (a clone, or the
#   bare copy the `fetch` tool brings: /work/.mirror/MagicStack+asyncpg/repo). env
#   ASYNCPG_VERSION  the asyncpg release from PyPI (default 0.32.0); its tests are the tag v<version> when the
#                    repository has it, else ASYNCPG_REF (default HEAD) if that is <version> or its .dev
#   MODES        default "direct relay proxy roots otlp" (direct and relay run first, whatever the order given):
#                  direct  the server; proxy  the proxy as shipped (injects nothing)
#                  relay   a control: a plain TCP relay (socat, or a few lines of Python without socat) in front
#                          of the same cluster; a test it loses too is reported as "timing: lost by any relay"
#                          and does not count as a proxy loss
#                  roots   the proxy with --root-contexts true (a fresh root context per transaction, injected)
#                  otlp    the proxy exporting a span per statement (--otlp true) to a local OTLP/HTTP sink
#                (asyncpg ignores PGOPTIONS, so there is no `context` mode as in the other scripts)
#   PYTEST_ARGS  default "tests"; e.g. "tests/test_copy.py"
#   PROXY_ARGS, PROFILE (release|debug), RESULTS (default /tmp/sqlc-asyncpg.<time>, kept), TIMEOUT per test (120 s)
# The tests and a venv with asyncpg==<version> (+ pytest, pytest-timeout, distro, cryptography) go into
# /usr/local/lib/sqlc-asyncpg/<version> (prepared once). No retries: every run counts.
# Exit 0 when every test that passes directly passes in every proxy mode of every run, or is lost through the
# control relay too (in this run or an earlier one).
set -euo pipefail

REPO=${1:?usage: asyncpg.sh ASYNCPG_REPO [RUNS]}
RUNS=${2:-1}
MODES=${MODES:-"direct relay proxy roots otlp"}
PROFILE=${PROFILE:-release}
TIMEOUT=${TIMEOUT:-120}
PYTEST_ARGS=${PYTEST_ARGS:-tests}
VERSION=${ASYNCPG_VERSION:-0.32.0}
BIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
CACHE=${ASYNCPG_CACHE:-/usr/local/lib/sqlc-asyncpg}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-/tmp/sqlc-asyncpg.$(date -u +%Y%m%dT%H%M%S)}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
git_() { if [ -d "$REPO/.git" ]; then git -C "$REPO" "$@"; else git --git-dir="$REPO" "$@"; fi; }

# --- the suite: the tests of that version and a venv with that asyncpg ------------------------------------------
if git_ rev-parse -q --verify "refs/tags/v$VERSION" >/dev/null; then
  REF=v$VERSION
else
  REF=${ASYNCPG_REF:-HEAD}
  at=$(git_ show "$REF:asyncpg/_version.py" | sed -nE "s/^__version__.*= *'([^']+)'.*/\1/p")
  case $at in
    "$VERSION" | "$VERSION".dev*) ;;
    *) echo "no tag v$VERSION in $REPO, and $REF is asyncpg $at (set ASYNCPG_REF or ASYNCPG_VERSION)" >&2; exit 1 ;;
  esac
fi
COMMIT=$(git_ rev-parse --short "$REF^{commit}")
SUITE=$CACHE/$VERSION
if [ ! -f "$SUITE/ready" ] || [ "$(cat "$SUITE/ready")" != "$COMMIT" ]; then
  log "preparing asyncpg $VERSION with the tests of $REF ($COMMIT) in $SUITE..."
  rm -rf "$SUITE" && mkdir -p "$SUITE"
  # Only tests/: asyncpg's source package beside them would shadow the installed (compiled) one.
  git_ archive "$REF" tests | tar -x -C "$SUITE"
  python3 -m venv "$SUITE/venv"
  "$SUITE/venv/bin/pip" install -q "asyncpg==$VERSION" pytest pytest-timeout distro cryptography
  echo "$COMMIT" > "$SUITE/ready"
fi
log "asyncpg suite: tests of $REF ($COMMIT), the venv's asyncpg $("$SUITE/venv/bin/python" -c 'import asyncpg; print(asyncpg.__version__)')"
log "commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- proxy/src src 2>/dev/null || echo ' (proxy/src or src modified)')"

# --- the proxy --------------------------------------------------------------------------------------------
flag=$([ "$PROFILE" = release ] && echo --release || true)
log "building the proxy ($PROFILE)..."
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q $flag -p sqlcommenter-proxy --example proxy)
PROXY_BIN=$TARGET/$PROFILE/examples/proxy

WORK=$(mktemp -d /tmp/sqlc-asyncpg-work.XXXXXX)
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

start_cluster() { # log name
  PGPORT_=$(free_port)
  as_pg "$BIN/initdb" -D "$WORK/data" -U postgres -A trust >/dev/null
  # What asyncpg's own test base configures for its clusters, and a statement log for the context count.
  cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PGPORT_
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 200
log_connections = on
log_line_prefix = '%m %a [%p] '
log_statement = all
log_min_error_statement = panic
jit = off
fsync = off
CONF
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg-$1.log" -w start >/dev/null
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

run_mode() { # mode run -> $RESULTS/$mode-$run.*
  local mode=$1 run=$2 port t0 name=$1-$2
  stop_cluster
  start_cluster "$name"
  case $mode in
    direct) port=$PGPORT_ ;;
    relay) start_relay; port=$RELAY_PORT ;;
    proxy) start_proxy; port=$PROXY_PORT ;;
    roots) start_proxy --root-contexts true; port=$PROXY_PORT ;;
    otlp)
      [ -n "$SINK_PID" ] || start_sink
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT OTEL_BSP_SCHEDULE_DELAY=200 start_proxy --otlp true
      port=$PROXY_PORT ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  t0=$(date +%s)
  # PGHOST set: asyncpg's test base uses that running server instead of creating its own clusters (the tests
  # that need clusters of their own — standby, cluster creation — fail or skip in every mode alike).
  # shellcheck disable=SC2086
  (cd "$SUITE" && PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres \
     timeout 3600 venv/bin/python -m pytest -p no:cacheprovider -q --timeout="$TIMEOUT" \
       --junitxml="$RESULTS/$name.xml" $PYTEST_ARGS >"$RESULTS/$name.out" 2>&1) || true
  echo $(( $(date +%s) - t0 )) > "$RESULTS/$name.seconds"
  local logf=$WORK/pg-$name.log
  logged "$logf" > "$RESULTS/$name.logged"
  if [ -n "${KEEP:-}" ]; then cp "$logf" "$RESULTS/$name.server.log"; fi
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
        tail = [l for l in lines[1:] if l.startswith("E ")][-8:]
        why[name] = [lines[0][:300] if lines else ""] + [l[:300] for l in tail]
    elif any(c.tag == "skipped" for c in tc):
        skipped.add(name)
    else:
        passed.add(name)
passed -= failed  # a test with an error in teardown is listed twice
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
for run in $(seq "$RUNS"); do
  for mode in $ORDERED; do
    log "mode $mode, run $run..."
    run_mode "$mode" "$run"
    xml=$RESULTS/$mode-$run.xml
    if [ ! -s "$xml" ]; then echo "$mode run $run: no results (see $RESULTS/$mode-$run.out)"; tail -5 "$RESULTS/$mode-$run.out"; status=1; continue; fi
    read -r p f s < <(summary "$xml")
    read -r nstmt nctx nown < "$RESULTS/$mode-$run.logged"
    echo "$mode run $run: passed $p, failed $f, skipped $s in $(cat "$RESULTS/$mode-$run.seconds") s"
    echo "  server log: $nctx of $nstmt client statements carry a trace context (+ $nown carrier statements of the proxy)"
    if [ "$mode" = direct ]; then
      [ "$f" = 0 ] || echo "  failing directly: $(grep -v '^    ' "$xml.failures" | tr '\n' ' ')"
    elif [ -f "$RESULTS/direct-$run.xml.passed" ]; then
      compare "$RESULTS/direct-$run.xml.passed" "$xml" "$mode" "run $run" || status=1
    fi
    [ "$mode" != otlp ] || echo "  OTLP sink: $(cat "$RESULTS/otlp-sink.count" 2>/dev/null || echo "0 0") (export requests, bytes, all runs)"
  done
done
stop_cluster
echo "results (junit xml, pytest output, proxy log; server logs with KEEP=1): $RESULTS"
exit $status

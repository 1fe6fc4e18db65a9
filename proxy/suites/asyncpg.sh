#!/usr/bin/env bash
# asyncpg's own test suite, directly against PostgreSQL and through the sqlcommenter proxy, on one throwaway
# cluster; prints the tests that pass directly but not through the proxy. asyncpg's tests come from its
# source repository (not on PyPI): pass the folder that holds its `tests/`.
# Usage: proxy/suites/asyncpg.sh ASYNCPG_SRC [RUNS] ; env PYTEST_ARGS (e.g. "tests/test_copy.py"),
#   PROXY_ARGS (extra proxy flags), MODES (default "direct proxy"), PROFILE (release|debug, default release).
# Exit 0 when every test that passes directly passes through the proxy in every run.
set -euo pipefail

SRC=$(cd "${1:?usage: asyncpg.sh ASYNCPG_SRC [RUNS]}" && pwd)
RUNS=${2:-1}
MODES=${MODES:-"direct proxy"}
PROFILE=${PROFILE:-release}
BIN=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
flag=$([ "$PROFILE" = release ] && echo --release || true)
echo "building the proxy ($PROFILE)..." >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q $flag -p sqlcommenter-proxy --example proxy)
PROXY_BIN=$TARGET/$PROFILE/examples/proxy

WORK=$(mktemp -d /tmp/sqlc-asyncpg.XXXXXX)
chmod 755 "$WORK"
PGPORT_=$((20000 + RANDOM % 10000)); PROXY_PORT=$((PGPORT_ + 1))
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null || true
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

as_pg "$BIN/initdb" -D "$WORK/data" -U postgres -A trust >/dev/null
# What asyncpg's own test base configures for its clusters.
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PGPORT_
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 200
log_connections = on
jit = off
fsync = off
CONF
as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null
# shellcheck disable=SC2086
"$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$PGPORT_" --admin off ${PROXY_ARGS:-} \
  >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done

run_suite() { # mode run -> junit xml path
  local mode=$1 run=$2 port
  port=$([ "$mode" = proxy ] && echo "$PROXY_PORT" || echo "$PGPORT_")
  local xml="$WORK/$mode-$run.xml"
  # The suite's own database objects are dropped between runs by its tests; a fresh database each run.
  (cd "$SRC" && PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres \
     timeout 1800 python3 -m pytest -p no:cacheprovider -q --timeout=120 ${PYTEST_ARGS:-tests} \
     --junitxml="$xml" >"$WORK/$mode-$run.out" 2>&1) || true
  echo "$xml"
}

summary() { # xml -> "passed failed skipped"
  python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
passed, failed, skipped = set(), set(), set()
for tc in root.iter("testcase"):
    name = f"{tc.get('classname')}::{tc.get('name')}"
    kinds = {c.tag for c in tc}
    (failed if kinds & {"failure", "error"} else skipped if "skipped" in kinds else passed).add(name)
print(len(passed), len(failed), len(skipped))
with open(sys.argv[1] + ".passed", "w") as f:
    f.write("".join(n + "\n" for n in sorted(passed)))
PY
}

status=0
for run in $(seq "$RUNS"); do
  for mode in $MODES; do
    xml=$(run_suite "$mode" "$run")
    if [ ! -s "$xml" ]; then echo "$mode run $run: no results (see $WORK/$mode-$run.out)"; tail -5 "$WORK/$mode-$run.out"; status=1; continue; fi
    read -r p f s < <(summary "$xml")
    echo "$mode run $run: passed $p, failed $f, skipped $s"
  done
  if [ -f "$WORK/direct-$run.xml.passed" ] && [ -f "$WORK/proxy-$run.xml.passed" ]; then
    lost=$(LC_ALL=C comm -23 "$WORK/direct-$run.xml.passed" "$WORK/proxy-$run.xml.passed")
    if [ -n "$lost" ]; then echo "passed directly, not through the proxy (run $run):"; echo "$lost" | sed 's/^/  /'; status=1; fi
  elif [ -f "$WORK/proxy-$run.xml" ] && [ -n "${BASELINE:-}" ]; then
    lost=$(LC_ALL=C comm -23 "$BASELINE" "$WORK/proxy-$run.xml.passed")
    if [ -n "$lost" ]; then echo "in BASELINE, not passed through the proxy (run $run):"; echo "$lost" | sed 's/^/  /'; status=1; fi
  fi
done
[ -z "${KEEP:-}" ] || echo "kept $WORK"
exit $status

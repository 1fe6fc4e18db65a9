#!/usr/bin/env bash
# Instructions per transaction in the middle process (PgBouncer 1.24, the proxy, the proxy as a pure relay),
# counted by valgrind's callgrind: repeatable on a busy machine, unlike wall-clock figures. Each cell runs
# the middle process under callgrind twice, for N1 and N2 pgbench -S transactions (-c 1), and reports
# (Ir(N2) - Ir(N1)) / (N2 - N1): startup and shutdown cancel out.
# Usage: proxy/bench/callgrind.sh ; env MODES (default "simple extended prepared"), TARGETS (default
#   "pgbouncer proxy relay"), CONTEXT (options|appname|none, as in pgbench.sh), N1 (1000), N2 (5000),
#   KEEP=DIR keeps the callgrind outputs there (read them with callgrind_annotate).
set -euo pipefail
MODES=${MODES:-"simple extended prepared"}
TARGETS=${TARGETS:-"pgbouncer proxy relay"}
CONTEXT=${CONTEXT:-options}
N1=${N1:-1000}; N2=${N2:-5000}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
carry_context
PGBOUNCER=${PGBOUNCER_BIN:-/usr/local/lib/pgbouncer-trixie/inst/bin/pgbouncer}
[ -x "$PGBOUNCER" ] || PGBOUNCER=$(command -v pgbouncer || true)
[ -n "$PGBOUNCER" ] || { echo "pgbouncer missing: run .ci/pgbouncer-build.sh" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind missing (apt-get install valgrind)" >&2; exit 1; }
build_proxy

make_work sqlc-cg
PORT=$((20000 + RANDOM % 10000)); MID=$((PORT + 1))
cleanup() {
  [ -n "${MID_PID:-}" ] && kill "$MID_PID" 2>/dev/null || true
  stop_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT
start_cluster "$PORT" 1
pgbouncer_config "$PORT" "$MID"

# One callgrind run of target $1 in mode $2 for $3 transactions: prints the total Ir.
ir() {
  local out="$WORK/cg.$1.$2.$3"
  case $1 in
    pgbouncer) as_pg valgrind --tool=callgrind --callgrind-out-file="$out" "$PGBOUNCER" "$WORK/pgbouncer.ini" >/dev/null 2>&1 & ;;
    proxy) valgrind --tool=callgrind --callgrind-out-file="$out" "$PROXY_BIN" --listen "127.0.0.1:$MID" \
             --upstream "127.0.0.1:$PORT" --admin off ${PROXY_ARGS:-} >/dev/null 2>&1 & ;;
    relay) valgrind --tool=callgrind --callgrind-out-file="$out" "$PROXY_BIN" --listen "127.0.0.1:$MID" \
             --upstream "127.0.0.1:$PORT" --admin off --inject false >/dev/null 2>&1 & ;;
  esac
  MID_PID=$!
  for _ in $(seq 100); do "$BIN/pg_isready" -q -h 127.0.0.1 -p "$MID" && break; sleep 0.2; done
  "$BIN/pgbench" -h 127.0.0.1 -p "$MID" -U postgres -S -M "$2" -c 1 -t "$3" -n postgres >/dev/null 2>&1 \
    || { echo "pgbench failed through $1 ($2)" >&2; return 1; }
  # Under runuser the pid is runuser's: signal the middle process itself.
  pkill -INT -f "callgrind-out-file=$out" || true
  wait "$MID_PID" 2>/dev/null || true
  MID_PID=
  for _ in $(seq 50); do [ -s "$out" ] && grep -q '^totals:' "$out" && break; sleep 0.2; done
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$out" "$KEEP/"
  awk '/^totals:/ {print $2}' "$out"
}

echo "callgrind, pgbench -S -c 1, instructions per transaction in the middle process (context: $CONTEXT)"
header="| mode |"; sep="|---|"
for t in $TARGETS; do header="$header $t |"; sep="$sep---|"; done
echo "$header"; echo "$sep"
for m in $MODES; do
  line="| $m |"
  for t in $TARGETS; do
    a=$(ir "$t" "$m" "$N1"); b=$(ir "$t" "$m" "$N2")
    line="$line $(( (b - a) / (N2 - N1) )) |"
  done
  echo "$line"
done

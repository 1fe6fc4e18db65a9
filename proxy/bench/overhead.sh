#!/usr/bin/env bash
# Overhead of telemetry: a baseline proxy build (OLD=path, e.g. a build of an earlier commit) vs this build
# with spans off vs this build with spans on (exporting to a local OTLP/HTTP sink, python3), pgbench -S,
# interleaved per round; median TPS per variant.
# Usage: OLD=/path/to/old/proxy proxy/bench/overhead.sh ; env ROUNDS (3), T (seconds per cell, 10),
#   C (clients, 8), M (simple|extended|prepared, extended), CONTEXT (as in pgbench.sh; default options).
set -euo pipefail
OLD=${OLD:?set OLD to a baseline proxy binary}
ROUNDS=${ROUNDS:-3}; T=${T:-10}; C=${C:-8}; M=${M:-extended}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
carry_context
build_proxy

make_work sqlc-overhead
PORT=$((30000 + RANDOM % 5000)); SINK_PORT=$((PORT + 9))
cleanup() {
  for p in ${OLD_PID:-} ${NEW_PID:-} ${SPANS_PID:-} ${SINK_PID:-}; do kill "$p" 2>/dev/null || true; done
  stop_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT
start_cluster "$PORT" 10

python3 "$HERE/otlp_sink.py" "$SINK_PORT" &
SINK_PID=$!
"$OLD" --listen "127.0.0.1:$((PORT + 1))" --upstream "127.0.0.1:$PORT" >"$WORK/old.log" 2>&1 &
OLD_PID=$!
"$PROXY_BIN" --listen "127.0.0.1:$((PORT + 2))" --upstream "127.0.0.1:$PORT" --admin off >"$WORK/new.log" 2>&1 &
NEW_PID=$!
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$SINK_PORT/v1/traces "$PROXY_BIN" --listen "127.0.0.1:$((PORT + 3))" \
  --upstream "127.0.0.1:$PORT" --admin off --otlp true >"$WORK/spans.log" 2>&1 &
SPANS_PID=$!
sleep 1

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A TPS
for r in $(seq "$ROUNDS"); do
  for v in old:1 new:2 spans:3; do
    n=${v%%:*}; o=${v##*:}
    tps=$("$BIN/pgbench" -h 127.0.0.1 -p $((PORT + o)) -U postgres -S -M "$M" -c "$C" -j 2 -T "$T" -n postgres 2>/dev/null |
      awk '/^tps/ {printf "%.0f", $3}')
    TPS[$n]="${TPS[$n]:-} $tps"
    echo "round $r $n $tps" >&2
  done
done
echo "pgbench -S -M $M -c $C, ${T}s per cell, $ROUNDS round(s), median TPS:"
for n in old new spans; do echo "$n: $(echo ${TPS[$n]} | tr ' ' '\n' | median)"; done
echo "spans proxy log:"; tail -3 "$WORK/spans.log"

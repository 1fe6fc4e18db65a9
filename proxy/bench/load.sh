#!/usr/bin/env bash
# Load: pgbench with 1,000 concurrent client connections through the proxy (injection on) for 60 s, on
# loopback, against a throwaway PostgreSQL 15 cluster with max_connections raised to fit. Reports TPS,
# failed transactions, p50/p99 latency (from a 10% sample of per-transaction logs) and the proxy's peak RSS.
# Usage: proxy/bench/load.sh [DURATION] ; env CLIENTS (1000), THREADS (2), MODE (simple|extended|prepared;
#   default extended), SCRIPT (pgbench builtin, default select-only), SCALE (10), PROXY_ARGS.
set -euo pipefail

DURATION=${1:-${DURATION:-60}}
CLIENTS=${CLIENTS:-1000}
THREADS=${THREADS:-2}
MODE=${MODE:-extended}
SCRIPT=${SCRIPT:-select-only}
SCALE=${SCALE:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
build_proxy

make_work sqlc-load
PGPORT_=$((20000 + RANDOM % 10000)); PROXY_PORT=$((PGPORT_ + 2))

cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null || true
  stop_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT

start_cluster "$PGPORT_" "$SCALE" "max_connections = $((CLIENTS + 50))" "shared_buffers = 256MB"

"$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$PGPORT_" --admin off ${PROXY_ARGS:-} \
  >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done

echo "pgbench: $CLIENTS clients, $THREADS threads, -M $MODE, builtin $SCRIPT, ${DURATION}s, through the proxy" >&2
cd "$WORK"
as_pg "$BIN/pgbench" -h 127.0.0.1 -p "$PROXY_PORT" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
  -M "$MODE" -b "$SCRIPT" -l --sampling-rate 0.1 --log-prefix "$WORK/txn" postgres >"$WORK/pgbench.out" 2>&1 || true
cat "$WORK/pgbench.out" | grep -E "^(number of|latency|initial|tps|transaction type|scaling|query mode)" || true
ERRORS=$(grep -ciE "error|fatal" "$WORK/pgbench.out" || true)
FAILED=$(grep -oP "number of failed transactions: \K[0-9]+" "$WORK/pgbench.out" || echo "?")
LAT=$(cat "$WORK"/txn.* 2>/dev/null | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {if (NR) printf "p50 %.2f ms, p99 %.2f ms (n=%d sampled)", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, NR}')
RSS=$(grep VmHWM /proc/$PROXY_PID/status | awk '{printf "%.1f MiB", $2/1024}')
echo "RESULT clients=$CLIENTS mode=$MODE script=$SCRIPT: $(grep -oP '^tps = \K[0-9.]+' "$WORK/pgbench.out" | head -1) TPS, failed=$FAILED, error lines=$ERRORS, $LAT, proxy peak RSS $RSS"
if [ "$ERRORS" != 0 ]; then grep -iE "error|fatal" "$WORK/pgbench.out" | sort | uniq -c | head >&2; exit 1; fi

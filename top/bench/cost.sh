#!/usr/bin/env bash
# Server cost of one `sqlcommenter top` refresh (the query in top/src/sample.rs, extracted from the source):
# EXPLAIN ANALYZE and pg_stat_statements' mean execution time, plus the round trip through pgbench, against a
# `SELECT 1` baseline, interleaved per round (medians). Scenarios: IDLE idle sessions (pgbench clients
# sleeping client-side), then the same plus a lock pile-up of WAITERS sessions behind one holder.
# Usage: top/bench/cost.sh ; env ROUNDS T IDLE WAITERS. Runs as root (drops to postgres) or as postgres.
set -euo pipefail
BIN=${BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}; HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-5}; T=${T:-5}; IDLE=${IDLE:-100}; WAITERS=${WAITERS:-20}
WORK=$(mktemp -d /tmp/sqlc-topcost.XXXXXX); chmod 755 "$WORK"
P=$((35000 + RANDOM % 5000))
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK"; pg() { runuser -u postgres -- "$@"; }; else pg() { "$@"; }; fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pg "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
pg "$BIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w -o "-p $P -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off \
  -c max_connections=$((IDLE + WAITERS + 20)) -c shared_preload_libraries=pg_stat_statements" start >/dev/null
psql() { pg "$BIN/psql" -h 127.0.0.1 -p "$P" -U postgres -X -q -v ON_ERROR_STOP=1 "$@" postgres; }
psql -c "CREATE EXTENSION pg_stat_statements; CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)"

# The query, from the source (between `ACTIVITY_SQL: &str = "\` and the closing `";`).
awk '/pub const ACTIVITY_SQL: &str = "\\/{f=1; next} f && /";$/ {sub(/";$/, ""); print; exit} f {print}' \
  "$HERE/../src/sample.rs" > "$WORK/activity.sql"
echo ";" >> "$WORK/activity.sql"
echo "SELECT 1;" > "$WORK/select1.sql"
printf '\\sleep 3600 s\n' > "$WORK/idle.sql"
echo "SELECT id FROM t FOR UPDATE;" > "$WORK/wait.sql"
chmod 644 "$WORK"/*.sql

bench() { # file -> "tps latency_ms"
  pg "$BIN/pgbench" -h 127.0.0.1 -p "$P" -U postgres -n -M prepared -c 1 -T "$T" -f "$1" postgres 2>&1 |
    awk '/^latency average/ {l=$4} /^tps = / {t=$3} END {print t, l}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

scenario() { # label
  local label=$1 lat_q=() lat_b=()
  local rows; rows=$(psql -At -f "$WORK/activity.sql" | wc -l)
  psql -c "SELECT pg_stat_statements_reset()" >/dev/null
  for r in $(seq "$ROUNDS"); do
    lat_q+=("$(bench "$WORK/activity.sql" | cut -d' ' -f2)")
    lat_b+=("$(bench "$WORK/select1.sql" | cut -d' ' -f2)")
  done
  local mean; mean=$(psql -At -c "SELECT round(mean_exec_time::numeric, 3) || ' ms over ' || calls || ' calls'
      FROM pg_stat_statements WHERE query LIKE '%pg_blocking_pids%' AND query NOT LIKE '%pg_stat_statements%'")
  local explain; explain=$(psql -At -c "EXPLAIN (ANALYZE, BUFFERS) $(tr '\n' ' ' < "$WORK/activity.sql" | sed 's/;\s*$//')" |
      grep -E 'Execution Time|Planning Time' | tr '\n' ' ')
  echo "## $label: $rows client backends listed"
  echo "round-trip latency, median of $ROUNDS x ${T}s pgbench -c 1 -M prepared: refresh query $(printf '%s\n' "${lat_q[@]}" | median) ms, SELECT 1 $(printf '%s\n' "${lat_b[@]}" | median) ms"
  echo "server execution (pg_stat_statements): $mean"
  echo "EXPLAIN ANALYZE: $explain"
}

pg "$BIN/pgbench" -h 127.0.0.1 -p "$P" -U postgres -n -c "$IDLE" -j 2 -T 86400 -f "$WORK/idle.sql" postgres >/dev/null 2>&1 &
pids+=($!)
until [ "$(psql -At -c "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND application_name = 'pgbench'")" -ge "$IDLE" ]; do sleep 0.2; done
echo "PostgreSQL $(psql -At -c 'SHOW server_version'), $(nproc) CPUs; $ROUNDS rounds"
scenario "$IDLE idle sessions"

pg "$BIN/psql" -h 127.0.0.1 -p "$P" -U postgres -X -q -c "BEGIN; LOCK TABLE t; SELECT pg_sleep(86400)" postgres >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
pg "$BIN/pgbench" -h 127.0.0.1 -p "$P" -U postgres -n -c "$WAITERS" -j 2 -T 86400 -f "$WORK/wait.sql" postgres >/dev/null 2>&1 &
pids+=($!)
until [ "$(psql -At -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")" -ge "$WAITERS" ]; do sleep 0.2; done
scenario "$IDLE idle + 1 lock holder + $WAITERS waiting on it"

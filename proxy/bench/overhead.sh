#!/usr/bin/env bash
# Overhead of telemetry: a baseline proxy build (OLD=path, e.g. a build of an earlier commit) vs this build
# with spans off vs this build with spans on (exporting to a local OTLP/HTTP sink, python3), pgbench -S,
# interleaved per round. Usage: OLD=/path/to/old/proxy proxy/bench/overhead.sh ; env ROUNDS T C M.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin; HERE=$(cd "$(dirname "$0")" && pwd); NEW=${NEW:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/examples/proxy}; OLD=${OLD:?set OLD to a baseline proxy binary}
ROUNDS=${ROUNDS:-3}; T=${T:-10}; C=${C:-8}; M=${M:-extended}
WORK=$(mktemp -d /tmp/sqlc-cmp.XXXXXX); chmod 755 $WORK; chown postgres $WORK
P=$((30000 + RANDOM % 5000))
pg() { runuser -u postgres -- "$@"; }
pg $BIN/initdb -D $WORK/data -A trust -U postgres >/dev/null
pg $BIN/pg_ctl -D $WORK/data -l $WORK/pg.log -w -o "-p $P -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
pg $BIN/pgbench -h 127.0.0.1 -p $P -U postgres -i -s 10 -q postgres >/dev/null 2>&1
python3 "$HERE/otlp_sink.py" $((P+9)) & SINK=$!
$OLD --listen 127.0.0.1:$((P+1)) --upstream 127.0.0.1:$P >$WORK/old.log 2>&1 & A=$!
$NEW --listen 127.0.0.1:$((P+2)) --upstream 127.0.0.1:$P --admin off >$WORK/new.log 2>&1 & B=$!
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$((P+9))/v1/traces $NEW --listen 127.0.0.1:$((P+3)) --upstream 127.0.0.1:$P --admin off --otlp true >$WORK/otlp.log 2>&1 & D=$!
trap "kill $A $B $D $SINK; pg $BIN/pg_ctl -D $WORK/data -m immediate stop >/dev/null; rm -rf $WORK" EXIT
sleep 1
for r in $(seq $ROUNDS); do
  for v in old:1 new:2 spans:3; do
    n=${v%%:*}; o=${v##*:}
    tps=$(pg $BIN/pgbench -h 127.0.0.1 -p $((P+o)) -U postgres -S -M $M -c $C -j 2 -T $T postgres 2>&1 | grep -oP '^tps = \K[0-9.]+')
    echo "round $r $n $tps"
  done
done
echo "spans proxy log:"; tail -3 $WORK/otlp.log

#!/usr/bin/env bash
# pgbench -S through: direct PostgreSQL, pgbouncer (session mode), and the sqlcommenter proxy (injection on).
# Cells: -M simple/extended/prepared x -c 1/8/32 (-j 2), each DURATION seconds (default 15) measured after
# WARMUP seconds (default 3) left out, the targets run back to back per cell (interleaved; each round starts at
# the next target), ROUNDS rounds (default 1; median reported).
# Each cell reports TPS, latency, the CPU per transaction of the middle process and of the server (its backends:
# what a carrier statement costs shows there). Then: proxy RSS with 1,000 idle client connections.
# Needs: PostgreSQL 15 binaries, PgBouncer (1.24 from .ci/pgbouncer-build.sh, or PGBOUNCER_BIN), python3.
# Usage: proxy/bench/pgbench.sh [DURATION] ; env WARMUP, ROUNDS, MODES, CLIENTS, SKIP_RSS=1,
#   TARGETS (default "direct pgbouncer proxy"; add "relay" for the proxy with injection off, "txn" for the proxy
#     with --carrier-scope transaction: the carrier before every named execution's transaction, as the default
#     scope writes it behind a pooler — here the proxy finds the server session is its own and writes a
#     client's context once),
#   PROXY_ARGS / RELAY_ARGS / TXN_ARGS (extra flags for those proxy instances),
#   SOCKETS: tcp (default: every leg on 127.0.0.1) or unix (pgbench to each target and PgBouncer and the proxies
#     to the server on Unix sockets, as on one host: PgBouncer's unix_socket_dir, the proxy's --listen-socket),
#   CONTEXT: how pgbench's sessions carry trace context, the same for every target —
#     options (default): `PGOPTIONS=-c sqlcommenter.traceparent=…` (the proxy comments every simple/unnamed
#       statement and writes the application_name carrier before every named execution; PgBouncer is told
#       to ignore the parameter), appname: `PGAPPNAME=<traceparent>` (the server holds it from the startup:
#       named executions need no carrier), none: no context (the proxy injects nothing).
set -euo pipefail

DURATION=${1:-${DURATION:-15}}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
MODES=${MODES:-"simple extended prepared"}
CLIENTS=${CLIENTS:-"1 8 32"}
TARGETS=${TARGETS:-"direct pgbouncer proxy"}
CONTEXT=${CONTEXT:-options}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
carry_context

# PgBouncer: PGBOUNCER_BIN, else the 1.24 build (.ci/pgbouncer-build.sh, as root), else the one on PATH.
PGBOUNCER=${PGBOUNCER_BIN:-}
if [ -z "$PGBOUNCER" ] && [ -x /usr/local/lib/pgbouncer-trixie/inst/bin/pgbouncer ]; then
  PGBOUNCER=/usr/local/lib/pgbouncer-trixie/inst/bin/pgbouncer
fi
PGBOUNCER=${PGBOUNCER:-$(command -v pgbouncer || true)}
[ -n "$PGBOUNCER" ] || { echo "pgbouncer missing: run .ci/pgbouncer-build.sh (1.24) or apt-get install pgbouncer" >&2; exit 1; }
echo "pgbouncer: $("$PGBOUNCER" --version | head -1)" >&2
build_proxy

make_work sqlc-bench
PGPORT_=$((20000 + RANDOM % 10000)); BOUNCER_PORT=$((PGPORT_ + 1)); PROXY_PORT=$((PGPORT_ + 2)); RELAY_PORT=$((PGPORT_ + 3))
TXN_PORT=$((PGPORT_ + 5))

cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null || true
  [ -n "${RELAY_PID:-}" ] && kill "$RELAY_PID" 2>/dev/null || true
  [ -n "${TXN_PID:-}" ] && kill "$TXN_PID" 2>/dev/null || true
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  # BOUNCER_PID is runuser's when run as root: stop PgBouncer itself through its pidfile.
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  stop_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT

start_cluster "$PGPORT_" 10 "max_connections = 1100" "shared_buffers = 128MB" "log_min_duration_statement = -1"

pgbouncer_config "$PGPORT_" "$BOUNCER_PORT" "max_client_conn = 2000" "default_pool_size = 64" \
  "pidfile = $WORK/pgbouncer.pid"
as_pg "$PGBOUNCER" "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!
ADMIN_PORT=$((PGPORT_ + 4))
SOCKET_ARGS=; [ "${SOCKETS:-tcp}" = tcp ] || SOCKET_ARGS="--listen-socket $WORK"
"$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" $SOCKET_ARGS --upstream "$(host):$PGPORT_" --admin "127.0.0.1:$ADMIN_PORT" ${PROXY_ARGS:-} >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
"$PROXY_BIN" --listen "127.0.0.1:$RELAY_PORT" $SOCKET_ARGS --upstream "$(host):$PGPORT_" --inject false --admin off ${RELAY_ARGS:-} >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
if [[ " $TARGETS " == *" txn "* ]]; then
  "$PROXY_BIN" --listen "127.0.0.1:$TXN_PORT" $SOCKET_ARGS --upstream "$(host):$PGPORT_" --carrier-scope transaction --admin off \
    ${TXN_ARGS:-} >"$WORK/txn.log" 2>&1 &
  TXN_PID=$!
fi
sleep 1

# One cell: pgbench for WARMUP + DURATION seconds with per-second progress. The first WARMUP seconds are left
# out of every figure: fresh backends (the proxy opens new ones for every run, PgBouncer keeps its pool warm from
# the run before) and cold caches. CPU is sampled when pgbench reports second WARMUP and after it exits; the
# transactions in the window are pgbench's total minus those the warm-up seconds reported.
cell() { # port mode clients pid -> "tps lat_ms middle_ticks server_ticks" for the measured window
  local out=$WORK/cell.out err=$WORK/cell.err c0 s0 c1 s1 total warm pg
  rm -f "$out" "$err" # the background pgbench truncates them only once it runs: no stale progress line
  "$BIN/pgbench" -h "$(host)" -p "$1" -U postgres -S -M "$2" -c "$3" -j 2 -T $((DURATION + WARMUP)) -P 1 -n \
    postgres >"$out" 2>"$err" &
  pg=$!
  if [ "$WARMUP" -gt 0 ]; then
    until grep -qs "^progress: $WARMUP.0 s" "$err" || ! kill -0 "$pg" 2>/dev/null; do sleep 0.01; done
  fi
  c0=$(cpu_ticks "$4"); s0=$(server_ticks)
  wait "$pg" || true
  sleep 0.3 # backends of closed sessions exit
  c1=$(cpu_ticks "$4"); s1=$(server_ticks)
  total=$(awk '/^number of transactions actually processed/ {print $NF}' "$out")
  warm=$(awk -v w="$WARMUP" '/^progress:/ && $2 + 0 <= w {s += $4} END {printf "%.0f", s}' "$err")
  awk -v t="${total:-0}" -v w="$warm" -v d="$DURATION" -v c="$3" -v dc=$((c1 - c0)) -v ds=$((s1 - s0)) \
    'BEGIN {n = t - w; tps = n / d; printf "%.0f %.4f %d %d\n", tps, (tps > 0 ? c * 1000 / tps : 0), dc, ds}'
}
cpu_ticks() { # pid -> utime+stime in clock ticks
  [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
TICK=$(getconf CLK_TCK)
per_txn() { # ticks tps -> microseconds of CPU per transaction over the cell
  awk -v d="$1" -v t="$2" -v s="$DURATION" -v hz="$TICK" 'BEGIN {printf "%.1f", (t>0 ? d/hz*1e6/(t*s) : 0)}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A TPS LAT CPU SRV
read -r -a TLIST <<<"$TARGETS"
for r in $(seq "$ROUNDS"); do
  # Each round starts the cells at the next target, so no target always runs first (or right after another).
  ORDER=("${TLIST[@]:$(((r - 1) % ${#TLIST[@]}))}" "${TLIST[@]:0:$(((r - 1) % ${#TLIST[@]}))}")
  for m in $MODES; do for c in $CLIENTS; do
    for t in "${ORDER[@]}"; do
      case $t in
        direct) p=$PGPORT_; pid=;; pgbouncer) p=$BOUNCER_PORT; pid=$(cat "$WORK/pgbouncer.pid" 2>/dev/null || true);;
        proxy) p=$PROXY_PORT; pid=$PROXY_PID;; relay) p=$RELAY_PORT; pid=$RELAY_PID;;
        txn) p=$TXN_PORT; pid=$TXN_PID;;
      esac
      read -r tps lat dc ds < <(cell "$p" "$m" "$c" "$pid")
      us=$(per_txn "$dc" "$tps"); srv=$(per_txn "$ds" "$tps")
      CPU[$t,$m,$c]="${CPU[$t,$m,$c]:-} $us"; SRV[$t,$m,$c]="${SRV[$t,$m,$c]:-} $srv"
      TPS[$t,$m,$c]="${TPS[$t,$m,$c]:-} $tps"; LAT[$t,$m,$c]="${LAT[$t,$m,$c]:-} $lat"
      echo "round $r $m -c $c $t: $tps tps, $lat ms, ${us} us CPU/txn in the middle process, ${srv} us in the server" >&2
    done
  done; done
done

echo
echo "pgbench -S, ${DURATION}s per cell after ${WARMUP}s of warm-up, -j 2, ${ROUNDS} round(s) (median), context: $CONTEXT, sockets: ${SOCKETS:-tcp}; TPS (latency ms; CPU us per transaction in pgbouncer/proxy; the server's CPU us per transaction)"
header="| mode | -c |"; sep="|---|---|"
for t in $TARGETS; do header="$header $t |"; sep="$sep---|"; done
RATIOS=proxy; [[ " $TARGETS " == *" txn "* ]] && RATIOS="proxy txn"
for t in $RATIOS; do header="$header $t/pgbouncer (median, min-max per round) |"; sep="$sep---|"; done
echo "$header"; echo "$sep"
for m in $MODES; do for c in $CLIENTS; do
  line="| $m | $c |"
  for t in $TARGETS; do
    tps=$(echo ${TPS[$t,$m,$c]} | tr ' ' '\n' | median); lat=$(echo ${LAT[$t,$m,$c]} | tr ' ' '\n' | median)
    cpu=$(echo ${CPU[$t,$m,$c]} | tr ' ' '\n' | median); srv=$(echo ${SRV[$t,$m,$c]} | tr ' ' '\n' | median)
    if [ "$t" = direct ]; then line="$line $tps ($lat; srv ${srv}us) |"; else line="$line $tps ($lat; ${cpu}us; srv ${srv}us) |"; fi
  done
  for t in $RATIOS; do # per-round ratio to pgbouncer
    ratios=$(paste <(echo ${TPS[$t,$m,$c]:-} | tr ' ' '\n') <(echo ${TPS[pgbouncer,$m,$c]:-} | tr ' ' '\n') |
      awk '$2>0 {printf "%.3f\n", $1/$2}')
    if [ -n "$ratios" ]; then
      med=$(echo "$ratios" | median); lo=$(echo "$ratios" | sort -n | head -1); hi=$(echo "$ratios" | sort -n | tail -1)
      line="$line $(printf '%.2f' "$med")x ($lo-$hi) |"
    else
      line="$line - |"
    fi
  done
  echo "$line"
done; done

# What the proxy injected over the whole run (its own counters): the evidence that injection was on.
python3 - "$ADMIN_PORT" <<'PY' || true
import sys, urllib.request
m = {}
for line in urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode().splitlines():
    if line.startswith("sqlc_proxy_") and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
st = sum(v for k, v in m.items() if k.startswith("sqlc_proxy_statements_total"))
com = m.get('sqlc_proxy_injections_total{kind="comment"}', 0)
car = m.get('sqlc_proxy_injections_total{kind="carrier"}', 0)
print(f"\nproxy injected: {com:.0f} comments, {car:.0f} carriers for {st:.0f} statements")
PY

if [ "${SKIP_RSS:-0}" != 1 ]; then
  python3 - "$PROXY_PORT" "$PROXY_PID" <<'PY'
import socket, struct, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
before = rss()
socks = []
params = b"user\0postgres\0database\0postgres\0\0"
pkt = struct.pack("!ii", 8 + len(params), 196608) + params
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(pkt)
    socks.append(s)
# wait until every session got its ReadyForQuery
for s in socks:
    buf = b""
    while not buf.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed during startup")
        buf += chunk
time.sleep(1)
print(f"\nproxy RSS: {before:.1f} MB idle, {rss():.1f} MB with {len(socks)} idle client connections (target <= 100 MB)")
for s in socks:
    s.close()
PY
fi

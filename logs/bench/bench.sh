#!/usr/bin/env bash
# Throughput and memory of `sqlcommenter-logs` against pgbadger on the same 100 MB+ logs, per format.
#
# 1. Starts a throwaway PostgreSQL 15 (logging_collector, stderr + csvlog + jsonlog at once,
#    log_min_duration_statement=0, auto_explain off) and runs three pgbench clients at once for RUN_SECS:
#    commented statements over the extended protocol (traceparent in a sqlcommenter comment),
#    named prepared statements with a traceparent carried in application_name, and plain TPC-B (no context).
# 2. Replicates each captured log to at least SIZE_MB (whole copies, format kept).
# 3. In ROUNDS rounds, interleaved: sqlcommenter-logs --format jsonl, sqlcommenter-logs (report), pgbadger;
#    /usr/bin/time -v gives wall time and peak RSS. Prints median MB/s (min..max), peak RSS and the median
#    per-round throughput ratio to pgbadger. A last row runs the report on 2x the input (the file given
#    twice) to show memory stays flat.
#
# Needs: PostgreSQL 15 binaries, pgbench, pgbadger (apt-get install pgbadger), /usr/bin/time (apt-get install
# time), python3. Run as root (initdb runs as `postgres`) or as a user that can run initdb.
# Env: SIZE_MB (110), RUN_SECS (25), ROUNDS (3), WORK (/tmp/sqlc-logs-bench), PG_BINDIR, CARGO_TARGET_DIR,
#      KEEP_LOGS=1 reuses logs already in $WORK.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SIZE_MB=${SIZE_MB:-110}
RUN_SECS=${RUN_SECS:-25}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/tmp/sqlc-logs-bench}
PG_BINDIR=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PG_BINDIR/initdb" ] || PG_BINDIR=/usr/lib/postgresql/15/bin
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PREFIX='%m [%p] %q%u@%d %a '

command -v pgbadger >/dev/null || { echo "pgbadger missing (apt-get install pgbadger)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time missing (apt-get install time)" >&2; exit 1; }

echo "== building sqlcommenter-logs (release)" >&2
(cd "$ROOT" && cargo build --release -q -p sqlcommenter-logs --example sqlcommenter-logs)
TOOL="$TARGET/release/examples/sqlcommenter-logs"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

mkdir -p "$WORK"
if [ "${KEEP_LOGS:-0}" != 1 ] || [ ! -s "$WORK/big.log" ]; then
    echo "== generating logs from a real server run (${RUN_SECS}s)" >&2
    rm -rf "$WORK/pg" "$WORK/pglog" "$WORK/sock" "$WORK/scripts"
    mkdir -p "$WORK/pg" "$WORK/pglog" "$WORK/sock" "$WORK/scripts"
    [ "$(id -u)" = 0 ] && chown postgres "$WORK" "$WORK/pg" "$WORK/pglog" "$WORK/sock"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$PG_BINDIR/initdb" -D "$WORK/pg" -U postgres -A trust >/dev/null
    cat >>"$WORK/pg/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = on
log_directory = '$WORK/pglog'
log_filename = 'postgresql.log'
log_destination = 'stderr,csvlog,jsonlog'
log_rotation_age = 0
log_rotation_size = 0
log_min_duration_statement = 0
log_line_prefix = '$PREFIX'
compute_query_id = on
CONF
    as_pg "$PG_BINDIR/pg_ctl" -D "$WORK/pg" -l "$WORK/server.out" -w start >/dev/null
    trap 'as_pg "$PG_BINDIR/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true' EXIT
    PGB="$PG_BINDIR/pgbench -h 127.0.0.1 -p $PORT -U postgres"
    "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc 'create database bench'
    $PGB -q -i -s 2 bench >/dev/null 2>&1
    # 16 scripts, each with its own traceparent in an appended sqlcommenter comment.
    args=()
    for i in $(seq 1 16); do
        tp="00-$(hex 16)-$(hex 8)-01"
        c="/*application='bench',route='%2Faccounts%2F$i',traceparent='$tp'*/"
        cat >"$WORK/scripts/s$i.sql" <<SQL
\set aid random(1, 200000)
\set delta random(-5000, 5000)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid $c;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid $c;
SELECT a.aid, a.abalance,
       b.bbalance
FROM pgbench_accounts a JOIN pgbench_branches b USING (bid)
WHERE a.aid = :aid $c;
SQL
        args+=(-f "$WORK/scripts/s$i.sql@1")
    done
    $PGB -n -M extended -c 2 -T "$RUN_SECS" "${args[@]}" bench >/dev/null 2>&1 &
    PGAPPNAME="bench@00-$(hex 16)-$(hex 8)-01" $PGB -n -M prepared -S -c 1 -T "$RUN_SECS" bench >/dev/null 2>&1 &
    $PGB -n -M simple -b tpcb-like -c 1 -T "$RUN_SECS" bench >/dev/null 2>&1 &
    wait
    as_pg "$PG_BINDIR/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null
    trap - EXIT
    for ext in log csv json; do
        src="$WORK/pglog/postgresql.$ext"
        out="$WORK/big.$ext"
        : >"$out"
        while [ "$(stat -c %s "$out")" -lt $((SIZE_MB * 1024 * 1024)) ]; do cat "$src" >>"$out"; done
        echo "   captured $(($(stat -c %s "$src") / 1024 / 1024)) MB of $ext, replicated to $(($(stat -c %s "$out") / 1024 / 1024)) MB" >&2
    done
fi

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
measure() { # label fmt bytes cmd...
    local label=$1 fmt=$2 bytes=$3
    shift 3
    /usr/bin/time -v -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" || {
        echo "FAILED: $label $fmt" >&2
        tail -5 "$WORK/stderr.txt" >&2
        return 0
    }
    python3 - "$WORK/time.txt" "$label" "$fmt" "$bytes" "$round" >>"$RESULTS" <<'PY'
import sys
t = open(sys.argv[1]).read().splitlines()
def field(name):
    return next(l.split(": ", 1)[1] for l in t if l.strip().startswith(name))
wall = field("Elapsed (wall clock) time")
parts = [float(p) for p in wall.split(":")]
secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) > 2 else 0)
rss = int(field("Maximum resident set size"))
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
mb = int(sys.argv[4]) / 1e6
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{sys.argv[5]}\t{mb / secs:.2f}\t{rss / 1024:.1f}\t{secs:.3f}\t{cpu:.3f}")
PY
}

declare -A PGB_FMT=([log]=stderr [csv]=csv [json]=jsonlog)
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS" >&2
    for ext in log csv json; do
        f="$WORK/big.$ext"
        bytes=$(stat -c %s "$f")
        measure "sqlcommenter-logs --format jsonl" "$ext" "$bytes" \
            "$TOOL" --no-progress --prefix "$PREFIX" --format jsonl "$f"
        measure "sqlcommenter-logs report" "$ext" "$bytes" "$TOOL" --no-progress --prefix "$PREFIX" --gaps "$f"
        measure "pgbadger" "$ext" "$bytes" \
            pgbadger -q -j 1 -f "${PGB_FMT[$ext]}" --prefix "$PREFIX" -x text -o "$WORK/pgbadger-out.txt" "$f"
    done
    f="$WORK/big.log"
    measure "sqlcommenter-logs report, 2x input" log $((2 * $(stat -c %s "$f"))) \
        "$TOOL" --no-progress --prefix "$PREFIX" --gaps "$f" "$f"
done

python3 - "$RESULTS" "$WORK" <<'PY'
import sys, statistics, collections, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(list)
for label, fmt, rnd, mbs, rss, secs, cpu in rows:
    by[(label, fmt)].append((int(rnd), float(mbs), float(rss), float(secs), float(cpu)))
sizes = {ext: os.path.getsize(f"{sys.argv[2]}/big.{ext}") / 1e6 for ext in ("log", "csv", "json")}
print("\nInput sizes: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()))
print("MB/s = input MB / wall time; CPU MB/s = input MB / (user+sys) time; ratios are per-round medians (min..max)")
hdr = f"| {'tool':<36} | {'fmt':<4} | {'wall MB/s':>22} | {'CPU MB/s':>22} | {'peak RSS MB':>11} | {'x pgbadger wall':>20} | {'x pgbadger CPU':>20} |"
print(hdr)
print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
def stat(v):
    return f"{statistics.median(v):.1f} ({min(v):.1f}..{max(v):.1f})"
for (label, fmt), vals in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0] == "pgbadger", kv[0][0])):
    wall = [v[1] for v in vals]
    mb = {v[0]: v[1] * v[3] for v in vals}
    cpu = [mb[v[0]] / max(v[4], 1e-6) for v in vals]
    rss = max(v[2] for v in vals)
    base = {v[0]: v for v in by.get(("pgbadger", fmt), [])}
    rw = rc = ""
    if label != "pgbadger" and base:
        r1 = [v[1] / base[v[0]][1] for v in vals if v[0] in base]
        r2 = [(base[v[0]][4] / (base[v[0]][1] * base[v[0]][3])) / (v[4] / (v[1] * v[3])) for v in vals if v[0] in base]
        if r1:
            rw, rc = stat(r1), stat(r2)
    print(f"| {label:<36} | {fmt:<4} | {stat(wall):>22} | {stat(cpu):>22} | {rss:>11.1f} | {rw:>20} | {rc:>20} |")
PY

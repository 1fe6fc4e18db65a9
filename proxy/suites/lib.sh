# Shared by asyncpg.sh and psycopg.sh (sourced): the control relay and the comparison with it. Needs
# free_port, wait_port, PGPORT_ and RESULTS from the sourcing script.

# A plain TCP relay (socat, or a few lines of Python without socat) in front of the same cluster: a test it
# loses too is lost by any extra hop (timing), not by the proxy.
start_relay() {
  RELAY_PORT=$(free_port)
  if command -v socat >/dev/null; then
    socat "TCP-LISTEN:$RELAY_PORT,bind=127.0.0.1,reuseaddr,fork,backlog=256,nodelay" "TCP:127.0.0.1:$PGPORT_,nodelay" \
      >>"$RESULTS/relay.log" 2>&1 &
  else
    python3 - "$RELAY_PORT" "$PGPORT_" >>"$RESULTS/relay.log" 2>&1 <<'PY' &
import socket, sys, threading
def pipe(a, b, first):
    try:
        while data := a.recv(65536):
            b.sendall(data)
        b.shutdown(socket.SHUT_WR)  # pass the end on; the other direction goes on
    except OSError:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
    if not first.acquire(blocking=False):  # the second direction to end closes both
        a.close(); b.close()
lst = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=256)
while True:
    c, _ = lst.accept()
    try:
        u = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    except OSError:
        c.close(); continue
    for s in (c, u): s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    first = threading.Semaphore(1)
    threading.Thread(target=pipe, args=(c, u, first), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c, first), daemon=True).start()
PY
  fi
  RELAY_PID=$!
  wait_port "$RELAY_PORT" || { echo "the control relay did not start (see $RESULTS/relay.log)" >&2; exit 1; }
}

# The tests that passed directly but not in this mode, with their failure excerpts. Through the control relay
# they are written to $RESULTS/relay.lost (all runs so far) and do not count; through the proxy, those the relay
# lost too (this run or an earlier one) are reported apart, as timing, and do not count. Exit 1: proxy losses.
compare() { # direct.passed xml mode label
  python3 - "$@" "$RESULTS/relay.lost" <<'PY'
import os, sys
direct, xml, mode, label, relay_file = sys.argv[1:]
where = f"{mode} {label}".strip()
lost = sorted(set(open(direct).read().splitlines()) - set(open(xml + ".passed").read().splitlines()))
why, name = {}, None
for line in open(xml + ".failures").read().splitlines():
    if line.startswith("    "):
        why.setdefault(name, []).append(line)
    else:
        name = line
def show(tests):
    for t in tests:
        print(f"  - {t}" + ("" if t in why else " (not run, or skipped)"))
        print("".join("  " + l + "\n" for l in why.get(t, [])), end="")
if mode == "relay":
    if lost:
        print(f"  passed directly, not through the control relay ({where}; not counted): {len(lost)}")
        show(lost)
        with open(relay_file, "a") as f:
            f.write("".join(t + "\n" for t in lost))
    sys.exit(0)
relay = set(open(relay_file).read().splitlines()) if os.path.exists(relay_file) else set()
timing = [t for t in lost if t in relay]
proxy = [t for t in lost if t not in relay]
if timing:
    print(f"  timing: lost by any relay (also through the control relay; not counted) ({where}): {len(timing)}")
    show(timing)
if proxy:
    print(f"  passed directly, not through the proxy ({where}): {len(proxy)}")
    show(proxy)
sys.exit(1 if proxy else 0)
PY
}

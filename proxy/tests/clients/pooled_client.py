"""psycopg 3 clients through the proxy (and whatever pooler is behind it): each request supplies its own
context (`set_config('sqlcommenter.traceparent', …)`, one pg_stat_statements entry for every trace) and
runs a named, an unnamed and an in-transaction named statement, each with a value unique to the request.
Usage: python3 pooled_client.py PORT CLIENTS REQUESTS
Prints `<value> <trace id>` for every statement value the server will log."""
import os
import sys
import threading

import psycopg
from psycopg import sql

port, clients, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = []
lock = threading.Lock()


def client(n):
    out = []
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         application_name="pooled", autocommit=True) as conn:
        for r in range(requests):
            trace = os.urandom(16).hex()
            tp = f"00-{trace}-{os.urandom(8).hex()}-01"
            # A literal, so the proxy reads the context from the text (pg_stat_statements normalizes it).
            conn.execute(sql.SQL("SELECT set_config('sqlcommenter.traceparent', {}, false)").format(sql.Literal(tp)))
            base = (n * requests + r) * 10
            conn.execute("SELECT %s::int /*marker_pool_named*/", (base + 1,), prepare=True)
            conn.execute("SELECT %s::int /*marker_pool_unnamed*/", (base + 2,), prepare=False)
            with conn.transaction():
                conn.execute("SELECT %s::int /*marker_pool_txn*/", (base + 3,), prepare=True)
            out += [f"{base + k} {trace}" for k in (1, 2, 3)]
    with lock:
        lines.extend(out)


threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("\n".join(sorted(lines)))

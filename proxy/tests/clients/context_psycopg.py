"""psycopg 3 through the proxy, supplying its own context as an app would: before each request,
`set_config('sqlcommenter.traceparent', '<traceparent>', false)` (a literal: the proxy reads it from the text).
Each request then runs unnamed, named (prepare=True), auto-prepared and in-transaction executions; then the
same in pipeline mode, where the context changes mid-batch and auto-prepare switches to named statements.
Executions are marked `ctx_psycopg_q`, context changes `ctx_psycopg_set`.
Usage: python3 context_psycopg.py PORT APPNAME REQUESTS ; prints the number of marked executions."""
import os
import sys

import psycopg

port, app, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


def set_context(conn):
    tp = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
    conn.execute(f"SELECT set_config('sqlcommenter.traceparent', '{tp}', false) /*ctx_psycopg_set*/")


count = 0
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", application_name=app,
                     autocommit=True) as conn:
    for r in range(n):
        set_context(conn)
        assert conn.execute("SELECT %s::int /*ctx_psycopg_q unnamed*/", (r,), prepare=False).fetchone()[0] == r
        assert conn.execute("SELECT %s::int /*ctx_psycopg_q named*/", (r,), prepare=True).fetchone()[0] == r
        assert conn.execute("SELECT %s::int /*ctx_psycopg_q auto*/", (r,)).fetchone()[0] == r
        with conn.transaction():
            assert conn.execute("SELECT %s::int /*ctx_psycopg_q txn*/", (r,), prepare=True).fetchone()[0] == r
        count += 4
    with conn.pipeline():
        curs = []
        for r in range(n):
            set_context(conn)
            for k in range(3):
                curs.append((r * 3 + k, conn.execute("SELECT %s::int /*ctx_psycopg_q pipeline*/", (r * 3 + k,))))
                count += 1
    assert all(c.fetchone()[0] == v for v, c in curs)
print(count)

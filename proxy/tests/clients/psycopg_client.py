"""psycopg 3 through the proxy: simple, server-side prepared (named), pipeline mode, COPY.
Usage: python3 psycopg_client.py PORT APPNAME"""
import sys
import psycopg

port, app = sys.argv[1], sys.argv[2]
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", application_name=app,
                     autocommit=True) as conn:
    print("simple", conn.execute("SELECT 1 /*marker_psycopg_simple*/").fetchone()[0])
    for i in range(3):
        v = conn.execute("SELECT %s::int + 10 /*marker_psycopg_prepared*/", (i,), prepare=True).fetchone()[0]
        print("prepared", v)
    with conn.pipeline():
        curs = [conn.execute("SELECT %s::int /*marker_psycopg_pipeline*/", (i,)) for i in range(5)]
        try:
            with conn.transaction():
                conn.execute("SELECT 1/0")
        except psycopg.errors.DivisionByZero:
            print("pipeline error contained")
    print("pipeline", [c.fetchone()[0] for c in curs])
    conn.execute("CREATE TEMP TABLE pc(x int)")
    with conn.cursor().copy("COPY pc FROM STDIN") as cp:
        for i in range(1000):
            cp.write_row((i,))
    print("copy", conn.execute("SELECT count(*), sum(x) FROM pc").fetchone())
    # A pipeline of 50 executions with psycopg's default auto-prepare: after a few, the statement is
    # prepared (named) mid-batch and its later Binds follow Executes in the same batch.
    with conn.pipeline():
        curs = [conn.execute("SELECT %s::int /*marker_psycopg_pipe50*/", (i,)) for i in range(50)]
    print("pipeline50", sum(c.fetchone()[0] for c in curs))

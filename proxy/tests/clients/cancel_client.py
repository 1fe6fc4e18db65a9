"""Cancels through the proxy with libpq's cancel (psycopg 3 `cancel_safe`, which returns once the server has
ended the cancel connection) and asyncpg (a statement timeout sends a cancel and waits for it), each followed
at once by another statement that must not be hit by the cancel.
Usage: python3 cancel_client.py PORT APPNAME ROUNDS
Prints one line per kind: `<kind> cancelled=<n> next_ok=<n>`."""
import asyncio
import sys
import threading
import time

import asyncpg
import psycopg

port, app, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = {}


def count(kind, cancelled, next_ok):
    c = counts.setdefault(kind, [0, 0])
    c[0] += cancelled
    c[1] += next_ok


def next_statement(conn):
    """The statement sent the moment the cancel returned: it must complete."""
    try:
        conn.execute("SELECT pg_sleep(0.05) /*marker_cancel_next*/")
        return 1
    except psycopg.errors.QueryCanceled:
        return 0


def cancel_later(conn, delay, done):
    def run():
        time.sleep(delay)
        conn.cancel_safe()
        done.set()
    threading.Thread(target=run).start()


def cancelled(conn, sql, body=None):
    """Runs `sql` (body drives a COPY), cancelled from another thread while it runs; 1 if it was cancelled."""
    done = threading.Event()
    cancel_later(conn, 0.1, done)
    try:
        if body is None:
            conn.execute(sql)
        else:
            with conn.cursor().copy(sql) as cp:
                body(cp)
        result = 0
    except psycopg.errors.QueryCanceled:
        result = 1
    done.wait()
    return result


def copy_in(cp):
    # Keep the COPY open (waiting for data) until the cancel arrives.
    cp.write_row((1,))
    time.sleep(0.5)
    cp.write_row((2,))


def copy_out(cp):
    for _ in cp:
        pass


with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", application_name=app,
                     autocommit=True) as conn:
    conn.execute("CREATE TEMP TABLE cancel_in(x int)")
    for _ in range(rounds):
        # A cancel while nothing runs: the server ignores it; it must not reach the next statement.
        conn.cancel_safe()
        count("idle", 0, next_statement(conn))
        count("running", cancelled(conn, "SELECT pg_sleep(5) /*marker_cancel_running*/"), next_statement(conn))
        count("copy_in", cancelled(conn, "COPY cancel_in FROM STDIN /*marker_cancel_copy_in*/", copy_in),
              next_statement(conn))
        count("copy_out",
              cancelled(conn, "COPY (SELECT pg_sleep(5) /*marker_cancel_copy_out*/) TO STDOUT", copy_out),
              next_statement(conn))


async def with_asyncpg():
    conn = await asyncpg.connect(host="127.0.0.1", port=int(port), user="postgres", database="postgres",
                                 server_settings={"application_name": app})
    try:
        for _ in range(rounds):
            # asyncpg cancels a timed-out statement and waits for the cancel before it returns.
            try:
                await conn.execute("SELECT pg_sleep(5) /*marker_cancel_asyncpg*/", timeout=0.1)
                got = 0
            except asyncio.TimeoutError:
                got = 1
            try:
                await conn.execute("SELECT pg_sleep(0.05) /*marker_cancel_next*/")
                ok = 1
            except asyncpg.exceptions.QueryCanceledError:
                ok = 0
            count("asyncpg", got, ok)
    finally:
        await conn.close()


asyncio.run(with_asyncpg())
for kind in ["idle", "running", "copy_in", "copy_out", "asyncpg"]:
    c, n = counts[kind]
    print(f"{kind} cancelled={c} next_ok={n}")

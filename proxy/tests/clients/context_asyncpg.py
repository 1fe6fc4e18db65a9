"""asyncpg through the proxy, supplying its own context as an app would: before each request,
`set_config('sqlcommenter.traceparent', '<traceparent>', false)` (simple protocol, a literal). Each request
runs a cached named statement (`fetchval`), an `executemany` batch (named Binds in one Sync) and a
statement in a transaction. Executions are marked `ctx_asyncpg_q`, context changes `ctx_asyncpg_set`.
Usage: python3 context_asyncpg.py PORT APPNAME REQUESTS ; prints the number of marked executions."""
import asyncio
import os
import sys

import asyncpg


async def main():
    port, app, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres",
                                 server_settings={"application_name": app})
    count = 0
    for r in range(n):
        tp = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
        await conn.execute(f"SELECT set_config('sqlcommenter.traceparent', '{tp}', false) /*ctx_asyncpg_set*/")
        assert await conn.fetchval("SELECT $1::int /*ctx_asyncpg_q fetchval*/", r) == r
        await conn.executemany("SELECT $1::int /*ctx_asyncpg_q executemany*/", [(r,), (r + 1,), (r + 2,)])
        async with conn.transaction():
            assert await conn.fetchval("SELECT $1::int + 1 /*ctx_asyncpg_q txn*/", r) == r + 1
        count += 5
    await conn.close()
    print(count)

asyncio.run(main())

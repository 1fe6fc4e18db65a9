"""asyncpg through the proxy (named statements, Flush-based prepare).
Usage: python3 asyncpg_client.py PORT APPNAME"""
import asyncio
import sys
import asyncpg


async def main():
    port, app = int(sys.argv[1]), sys.argv[2]
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres",
                                 server_settings={"application_name": app})
    for i in range(3):
        print("fetchval", await conn.fetchval("SELECT $1::int * 5 /*marker_asyncpg*/", i))
    async with conn.transaction():
        await conn.executemany("SELECT $1::int", [(1,), (2,)])
    print("listen", await conn.fetchval("SELECT 42"))
    await conn.close()

asyncio.run(main())

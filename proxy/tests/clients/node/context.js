// node-postgres through the proxy, supplying its own context as an app would: before each request,
// set_config('sqlcommenter.traceparent', '<traceparent>', false) (simple protocol, a literal). Each request
// runs a named query, an unnamed one and a named one in a transaction. Executions are marked ctx_node_q,
// context changes ctx_node_set.
// Usage: node context.js PORT APPNAME REQUESTS ; prints the number of marked executions.
const crypto = require('crypto');
const { Client } = require('pg');
(async () => {
  const [port, app, n] = process.argv.slice(2);
  const c = new Client({ host: '127.0.0.1', port: Number(port), user: 'postgres', database: 'postgres', application_name: app });
  await c.connect();
  let count = 0;
  const check = (r, v) => { if (r.rows[0].v !== v) throw new Error(`got ${r.rows[0].v}, wanted ${v}`); };
  for (let r = 0; r < Number(n); r++) {
    const tp = `00-${crypto.randomBytes(16).toString('hex')}-${crypto.randomBytes(8).toString('hex')}-01`;
    await c.query(`SELECT set_config('sqlcommenter.traceparent', '${tp}', false) /*ctx_node_set*/`);
    check(await c.query({ name: 'ctx_named', text: 'SELECT $1::int AS v /*ctx_node_q named*/', values: [r] }), r);
    check(await c.query('SELECT $1::int AS v /*ctx_node_q unnamed*/', [r]), r);
    await c.query('BEGIN');
    check(await c.query({ name: 'ctx_txn', text: 'SELECT $1::int + 1 AS v /*ctx_node_q txn*/', values: [r] }), r + 1);
    await c.query('COMMIT');
    count += 3;
  }
  await c.end();
  console.log(count);
})().catch((e) => { console.error(e); process.exit(1); });

// node-postgres through the proxy: named prepared statements and plain queries.
// Usage: node named.js PORT APPNAME ; prints one line per result.
const { Client } = require('pg');
(async () => {
  const [port, app] = process.argv.slice(2);
  const c = new Client({ host: '127.0.0.1', port: Number(port), user: 'postgres', database: 'postgres', application_name: app });
  await c.connect();
  for (let i = 0; i < 3; i++) {
    const r = await c.query({ name: 'node_named', text: 'SELECT $1::int * 3 AS v /*marker_node_named*/', values: [i] });
    console.log('named', r.rows[0].v);
  }
  const r = await c.query('SELECT $1::text AS t /*marker_node_unnamed*/', ['x']);
  console.log('unnamed', r.rows[0].t);
  await c.end();
})().catch((e) => { console.error(e); process.exit(1); });

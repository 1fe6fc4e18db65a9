//! Tricky queries shared by the property tests and the real-PostgreSQL tests. Each runs on the schema in
//! [`SCHEMA`] and holds no sqlcommenter comment of its own.

#![allow(dead_code)]
/// Tables the corpus queries use.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, note text, \"Total\" numeric);\n\
CREATE TABLE IF NOT EXISTS \"we\"\"ird\" (\"a;b\" int);";

/// Single statements: each can be prefixed with EXPLAIN.
pub const STATEMENTS: &[&str] = &[
    "SELECT 1",
    "SELECT 1;",
    "select 1 ;  ",
    "SELECT 1; -- trailing line comment",
    "SELECT 1 /* trailing block */",
    "SELECT 1 -- no newline at the end",
    "SELECT 'it''s -- not a comment' AS s",
    "SELECT E'it\\'s /* not */ a comment' AS s;",
    "SELECT e'\\\\' AS backslash",
    "SELECT U&'d\\0061t\\+000061' AS u",
    "SELECT $$ dollar ' \" -- /* $$ AS d",
    "SELECT $tag$ a $$ nested $$ b $tag$ AS d;",
    "SELECT \"Total\", note FROM orders WHERE id = 1",
    "SELECT \"a;b\" FROM \"we\"\"ird\"",
    "/* leading */ SELECT 1",
    "/* outer /* nested */ still comment */ SELECT 2",
    "/*+ SeqScan(orders) */ SELECT * FROM orders",
    "SELECT 1 - -1, 2 -- x\n",
    "SELECT 4/2, 3 * -2",
    "SELECT id FROM orders WHERE note LIKE '%;%' ORDER BY id",
    "UPDATE orders SET note = 'x' WHERE id = 42",
    "DELETE FROM orders WHERE note = $q$'$q$",
    "INSERT INTO orders (id, note) VALUES (7, 'a''b')",
    "\n\tSELECT\n\t1\n\n",
    "SELECT B'1010', X'1F'",
    "SELECT (array[1,2])[1]",
    "SELECT '{\"a\": 1}'::jsonb ->> 'a'",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
];

/// Several statements in one string (simple-query protocol).
pub const SCRIPTS: &[&str] =
    &["SELECT 1; SELECT 2", "SELECT 1; SELECT 2;", "BEGIN; SELECT 1; COMMIT; -- done\n", "SELECT 'a;b'; SELECT $$;$$;"];

/// Inputs where no position is safe: the query must come back unchanged.
pub const UNSAFE: &[&str] = &["SELECT 'unterminated", "SELECT $x$ open", "SELECT /* open /* */", "SELECT \"open"];

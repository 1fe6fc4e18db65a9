//! Inputs shared by the benches.
#![allow(dead_code)]

use sqlcommenter::Commenter;

pub const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
pub const TS: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// traceparent + tracestate + 4 static tags, as in the target.
pub fn commenter() -> Commenter {
    Commenter::builder()
        .tag("application", "checkout")
        .tag("db_driver", "sqlx:0.9.0")
        .tag("route", "/api/orders/{id}")
        .tag("action", "get_order")
        .build()
        .expect("valid configuration")
}

pub fn query_150() -> String {
    let q = "SELECT o.id, o.status, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE o.id = $1 AND o.tenant = 'acme' ORDER BY 1;";
    assert!((140..=160).contains(&q.len()), "{}", q.len());
    q.to_string()
}

pub fn query_10k() -> String {
    let mut q = String::from("SELECT id FROM orders WHERE id IN (");
    let mut i = 0;
    while q.len() < 10_000 {
        q.push_str(&format!("{i}, 'v{i}''x', "));
        i += 1;
    }
    q.push_str("0) /* big list */;");
    q
}

/// A 1 MB multi-statement script with strings, dollar quotes, comments and identifiers.
pub fn script_1m() -> String {
    let block = "-- migration step\nCREATE TABLE IF NOT EXISTS \"Orders\" (id bigint PRIMARY KEY, note text DEFAULT 'it''s');\n\
                 INSERT INTO \"Orders\" VALUES (1, E'a\\'b'), (2, $$x;y$$);\n/* block /* nested */ comment */\n\
                 CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql;\n\
                 UPDATE \"Orders\" SET note = 'done' WHERE id = 2; SELECT count(*) FROM \"Orders\" WHERE note <> '';\n";
    let mut s = String::with_capacity(1 << 20);
    while s.len() < (1 << 20) {
        s.push_str(block);
    }
    s
}

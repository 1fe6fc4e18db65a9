//! The statement that writes the carrier, and the recogniser that tells carrier statements from the
//! application's (for the log tool).

use super::effect::{statements, Effect};
use super::{decode_application_name, decode_pg_tracing, Scope, DEFAULT_GUC, PG_TRACING_GUC};
use crate::traceparent::TraceParent;

/// The one carrier statement text: parameters are the setting's name, its value and `is_local`
/// (`'true'`/`'false'`). Parse it once per connection (or send it unnamed); its text never changes, so
/// `pg_stat_statements` keeps a single entry for it.
pub const SET_CONFIG_SQL: &str = "SELECT pg_catalog.set_config($1, $2, $3)";

/// The proxy's carrier statement: [`SET_CONFIG_SQL`] that also returns the server process's id, so that a
/// proxy learns whose server session ran it — its own (the id the server gave in its BackendKeyData:
/// PostgreSQL itself) or a pooler's, which may change between transactions. The same parameters; one
/// fixed text as well.
pub const SET_CONFIG_PID_SQL: &str = "SELECT pg_catalog.set_config($1, $2, $3), pg_catalog.pg_backend_pid()";

/// One carrier write: the statement [`SET_CONFIG_SQL`] with these parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write<'a> {
    /// The setting's name.
    pub variable: &'a str,
    /// Its new value.
    pub value: String,
    /// How long it lasts.
    pub scope: Scope,
}

impl Write<'_> {
    /// The three text parameters of [`SET_CONFIG_SQL`].
    pub fn params(&self) -> [&str; 3] {
        [self.variable, &self.value, if self.scope.is_local() { "true" } else { "false" }]
    }

    /// The same write as one simple-protocol statement with literals, for paths that can only send text
    /// (e.g. folded into a `BEGIN`). `pg_stat_statements` normalizes its constants, so every value still
    /// lands in one entry. The literals are escape strings, correct whatever `standard_conforming_strings`.
    pub fn literal_sql(&self) -> String {
        let mut out = String::with_capacity(48 + self.variable.len() + self.value.len());
        out.push_str("SELECT pg_catalog.set_config(");
        quote_into(&mut out, self.variable);
        out.push_str(", ");
        quote_into(&mut out, &self.value);
        out.push_str(if self.scope.is_local() { ", true)" } else { ", false)" });
        out
    }
}

/// Appends `value` as an escape-string literal `E'…'`.
fn quote_into(out: &mut String, value: &str) {
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Whether `sql` is a statement a carrier sends, rather than the application's: [`SET_CONFIG_SQL`] itself,
/// a `set_config` or `SET`/`RESET` of a carrier setting (`sqlcommenter.*`, `pg_tracing.trace_context`),
/// or an `application_name` write whose value carries a traceparent — alone, or after a `BEGIN` in one
/// simple Query. The application's own `SET application_name = 'web'` is not one.
pub fn is_carrier_statement(sql: &str) -> bool {
    let normalized: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let bare = normalized.trim_end_matches(';').trim_end();
    if bare.eq_ignore_ascii_case(SET_CONFIG_SQL)
        || bare.eq_ignore_ascii_case(SET_CONFIG_PID_SQL)
        || bare.eq_ignore_ascii_case("SELECT set_config($1, $2, $3)")
    {
        return true;
    }
    // Earlier releases' parameterized forms.
    if bare.eq_ignore_ascii_case("SELECT pg_catalog.set_config($1, $2, false)")
        || bare.eq_ignore_ascii_case("SELECT set_config($1, $2, false)")
    {
        return true;
    }
    let effects = statements(sql);
    // `Write::literal_sql`'s exact shape (escape-string name): also a clear back to the client's own name.
    let ours = |s: &str| s.trim_start().starts_with("SELECT pg_catalog.set_config(E'");
    if ours(sql.split(';').next_back().unwrap_or(sql))
        && effects.iter().all(|e| matches!(e, Effect::Begin | Effect::Set { .. }))
        && effects.iter().any(|e| matches!(e, Effect::Set { variable, .. } if variable == "application_name" || is_carrier_write(variable, None)))
    {
        return true;
    }
    let mut carrier = false;
    for e in &effects {
        match e {
            Effect::Begin => {}
            Effect::Set { variable, value, .. } if is_carrier_write(variable, value.as_deref()) => carrier = true,
            _ => return false,
        }
    }
    carrier
}

fn is_carrier_write(variable: &str, value: Option<&str>) -> bool {
    if variable == DEFAULT_GUC || variable == PG_TRACING_GUC || variable.starts_with("sqlcommenter.") {
        return true;
    }
    variable == "application_name" && value.is_some_and(|v| decode_application_name(v).is_some())
}

/// The traceparent a carrier statement writes, when its value is a literal (log lines of simple-protocol
/// carriers; the parameterized form's value is in the log's `parameters:` detail instead).
pub fn written_traceparent(sql: &str) -> Option<TraceParent> {
    statements(sql).into_iter().rev().find_map(|e| match e {
        Effect::Set { variable, value: Some(v), .. } if variable == "application_name" => {
            decode_application_name(&v).map(|(_, tp)| tp)
        }
        Effect::Set { variable, value: Some(v), .. } if variable == PG_TRACING_GUC => decode_pg_tracing(&v),
        Effect::Set { value: Some(v), .. } => TraceParent::parse(v.trim()).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn literal_form_round_trips_through_the_recogniser() {
        let w = Write { variable: "application_name", value: format!("o'k\\@{TP}"), scope: Scope::Transaction };
        let sql = w.literal_sql();
        assert_eq!(sql, format!("SELECT pg_catalog.set_config(E'application_name', E'o''k\\\\@{TP}', true)"));
        assert!(is_carrier_statement(&sql));
        assert_eq!(written_traceparent(&sql), Some(TraceParent::parse(TP).unwrap()));
        assert!(is_carrier_statement(&format!("BEGIN; {sql}")));
        // A driver's clear back to the client's own name, in the same literal form.
        let clear = Write { variable: "application_name", value: "svc".into(), scope: Scope::Session };
        assert!(is_carrier_statement(&clear.literal_sql()));
        assert!(!is_carrier_statement("SELECT set_config('application_name', 'svc', false)"));
    }

    #[test]
    fn recognises_carriers_not_application_statements() {
        for sql in [
            SET_CONFIG_SQL,
            SET_CONFIG_PID_SQL,
            "select  pg_catalog.set_config($1, $2, $3);",
            "SELECT pg_catalog.set_config($1, $2, false)",
            &format!("SET application_name TO E'orders@{TP}'"),
            &format!("SET LOCAL application_name TO '{TP}'"),
            &format!("BEGIN; SET LOCAL sqlcommenter.traceparent TO '{TP}'"),
            "RESET sqlcommenter.traceparent",
            "SET LOCAL sqlcommenter.traceparent TO DEFAULT",
            &format!("SET sqlcommenter.traceparent = '{TP}'"),
        ] {
            assert!(is_carrier_statement(sql), "{sql}");
        }
        for sql in [
            "SET application_name = 'web'",
            "RESET application_name",
            "SELECT 1",
            "BEGIN",
            &format!("SELECT '{TP}'"),
            &format!("SET application_name TO '{TP}'; SELECT 1"),
            "SELECT set_config('myapp.tenant', '42', false)",
            "SELECT pg_catalog.pg_backend_pid()",
        ] {
            assert!(!is_carrier_statement(sql), "{sql}");
        }
    }
}

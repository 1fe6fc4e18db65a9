//! `sqlcommenter comment` and `sqlcommenter parse`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use sqlcommenter::{Commenter, Dialect, Placement, Skip, TraceContext, TraceParent, TraceState};

/// Arguments of `sqlcommenter comment`.
#[derive(Debug, Args)]
pub struct CommentArgs {
    /// SQL dialect: postgres or mysql.
    #[arg(long, default_value = "postgres")]
    dialect: Dialect,
    /// Where the comment goes: append (default) or prepend.
    #[arg(long, default_value = "append")]
    placement: Placement,
    /// A tag to add, as KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// W3C traceparent to carry (validated strictly).
    #[arg(long, value_name = "TP")]
    traceparent: Option<String>,
    /// W3C tracestate to carry (needs --traceparent).
    #[arg(long, value_name = "TS", requires = "traceparent")]
    tracestate: Option<String>,
}

/// Arguments of `sqlcommenter parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// SQL dialect: postgres or mysql.
    #[arg(long, default_value = "postgres")]
    dialect: Dialect,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("tag key is empty".into()),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn read_stdin() -> Result<String> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
    String::from_utf8(buf).map_err(|e| anyhow!("stdin is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

/// Runs `sqlcommenter comment`.
pub fn comment(args: CommentArgs) -> Result<ExitCode> {
    let ctx = match &args.traceparent {
        None => None,
        Some(tp) => {
            let traceparent = TraceParent::parse(tp).map_err(|e| anyhow!("invalid --traceparent: {e}"))?;
            let tracestate = match &args.tracestate {
                None => None,
                Some(ts) => Some(TraceState::parse(ts).map_err(|e| anyhow!("invalid --tracestate: {e}"))?)
                    .filter(|ts| !ts.is_empty()),
            };
            Some(TraceContext { traceparent, tracestate })
        }
    };
    let mut builder = Commenter::builder().dialect(args.dialect).placement(args.placement);
    for (k, v) in args.tags {
        builder = builder.tag(k, v);
    }
    let commenter = builder.build().map_err(|e| anyhow!("invalid --tag: {e}"))?;
    let sql = read_stdin()?;
    let out = commenter.inject(&sql, ctx.as_ref());
    if let Some(reason) = out.skipped() {
        if reason != Skip::NothingToAdd {
            eprintln!("sqlcommenter: SQL left unchanged: {reason}");
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_str().as_bytes()).context("writing stdout")?;
    stdout.flush().context("writing stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `sqlcommenter parse`.
pub fn parse(args: ParseArgs) -> Result<ExitCode> {
    let sql = read_stdin()?;
    let tags = sqlcommenter::parse_tags(&sql, args.dialect);
    println!("{}", serde_json::to_string(&tags).context("encoding JSON")?);
    Ok(ExitCode::SUCCESS)
}

//! The operator binary as a user runs it: stdin in, stdout out, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sqlcommenter"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading stdin (argument errors): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn comment_writes_the_sql_byte_for_byte() {
    let out = run(
        &["comment", "--tag", "route=/orders", "--tag", "app=shop", "--traceparent", TP, "--tracestate", "a=1,b=2"],
        b"SELECT 1;\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("SELECT 1 /*app='shop',route='%2Forders',traceparent='{TP}',tracestate='a%3D1%2Cb%3D2'*/;\n")
    );
    let prepend = run(&["comment", "--placement", "prepend", "--tag", "a=b"], b"select 1");
    assert_eq!(prepend.stdout, b"/*a='b'*/ select 1");
    let mysql = run(&["comment", "--dialect", "mysql", "--tag", "a=b"], b"select 1 # x");
    assert_eq!(mysql.stdout, b"select 1 /*a='b'*/ # x");
}

#[test]
fn invalid_context_exits_2_with_one_line_and_no_output() {
    for args in [
        vec!["comment", "--traceparent", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"],
        vec!["comment", "--traceparent", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
        vec!["comment", "--traceparent", TP, "--tracestate", "BAD=1"],
        vec!["comment", "--tracestate", "a=1"],
        vec!["comment", "--tag", "novalue"],
        vec!["comment", "--dialect", "oracle"],
    ] {
        let out = run(&args, b"select 1");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    let out = run(&["comment", "--traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"], b"x");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("trace-id is all zeros"), "{err}");
}

#[test]
fn unsafe_sql_is_returned_unchanged_with_a_reason() {
    let out = run(&["comment", "--tag", "a=b"], b"select 'open");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"select 'open");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unterminated"));
}

#[test]
fn parse_prints_json() {
    let out = run(&["parse"], format!("SELECT 1 /*route='%2Forders',traceparent='{TP}'*/").as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["route"], "/orders");
    assert_eq!(v["traceparent"], TP);
    let none = run(&["parse"], b"select 1");
    assert_eq!(String::from_utf8(none.stdout).unwrap().trim(), "{}");
}

#[test]
fn help_and_version() {
    let help = run(&["--help"], b"");
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.contains("comment") && text.contains("parse"));
    let version = run(&["--version"], b"");
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("sqlcommenter {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = run(&["frobnicate"], b"");
    assert_eq!(bad.status.code(), Some(2));
}

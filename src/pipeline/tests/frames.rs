//! The wire frames the tests feed and expect, encoded here rather than by the code under test:
//! client messages (Query, Parse, Bind, Execute, Sync), PostgreSQL's replies, and the errors
//! pgward raises with every field it sets; plus a splitter to look at what came out.

use crate::protocol::backend::TransactionStatus;
use crate::protocol::build::{self, Report, Severity};
use crate::protocol::tag::{backend as be, frontend as fe};

/// A whole frame: tag, length, body.
pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub(super) fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    build::query(&mut out, sql).unwrap();
    out
}

pub(super) fn parse(statement: &str, sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    build::parse(&mut out, statement.as_bytes(), sql, &[]).unwrap();
    out
}

/// A Bind of `statement` into `portal` with text parameters and text results.
pub(super) fn bind(portal: &str, statement: &str, params: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    cstr(&mut body, statement);
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
    for p in params {
        body.extend_from_slice(&u32::try_from(p.len()).unwrap().to_be_bytes());
        body.extend_from_slice(p.as_bytes());
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    msg(fe::BIND, &body)
}

pub(super) fn execute(portal: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    body.extend_from_slice(&0i32.to_be_bytes());
    msg(fe::EXECUTE, &body)
}

pub(super) fn sync() -> Vec<u8> {
    msg(fe::SYNC, b"")
}

/// Parse, Bind, Execute of the unnamed statement and portal, and Sync: one batch.
pub(super) fn batch(sql: &str, params: &[&str]) -> Vec<Vec<u8>> {
    vec![parse("", sql), bind("", "", params), execute(""), sync()]
}

/// A RowDescription of text columns.
pub(super) fn row_description(columns: &[&str]) -> Vec<u8> {
    let mut body = u16::try_from(columns.len()).unwrap().to_be_bytes().to_vec();
    for name in columns {
        cstr(&mut body, name);
        body.extend_from_slice(&0u32.to_be_bytes()); // table oid
        body.extend_from_slice(&0u16.to_be_bytes()); // column number
        body.extend_from_slice(&25u32.to_be_bytes()); // text
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
    }
    msg(be::ROW_DESCRIPTION, &body)
}

pub(super) fn data_row(values: &[&str]) -> Vec<u8> {
    let mut body = u16::try_from(values.len()).unwrap().to_be_bytes().to_vec();
    for v in values {
        body.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    msg(be::DATA_ROW, &body)
}

pub(super) fn complete(tag: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, tag);
    msg(be::COMMAND_COMPLETE, &body)
}

pub(super) fn ready() -> Vec<u8> {
    let mut out = Vec::new();
    build::ready_for_query(&mut out, TransactionStatus::Idle);
    out
}

pub(super) fn parse_complete() -> Vec<u8> {
    msg(be::PARSE_COMPLETE, b"")
}

pub(super) fn bind_complete() -> Vec<u8> {
    msg(be::BIND_COMPLETE, b"")
}

/// An ErrorResponse as PostgreSQL sends it.
pub(super) fn pg_error(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Report::error(code, message).write_error(&mut out);
    out
}

/// An ErrorResponse with every field pgward sets.
pub(super) fn error(
    severity: Severity,
    code: &str,
    message: &str,
    detail: &str,
    hint: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::new();
    Report {
        severity,
        code,
        message,
        detail: Some(detail),
        hint,
    }
    .write_error(&mut out);
    out
}

/// The bytes split into whole frames (the test's own check of what pgward sent).
pub(super) fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let (frame, rest) = bytes.split_at(len + 1);
        out.push(frame.to_vec());
        bytes = rest;
    }
    out
}

/// The frames' tags, for a readable first assertion before the exact bytes.
pub(super) fn tags(bytes: &[u8]) -> Vec<u8> {
    frames(bytes).iter().map(|f| f[0]).collect()
}

/// A frame as text, for `contains` checks on messages that carry an age.
pub(super) fn text(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame).into_owned()
}

pub(super) fn describe_portal(portal: &str) -> Vec<u8> {
    let mut body = vec![b'P'];
    cstr(&mut body, portal);
    msg(fe::DESCRIBE, &body)
}

pub(super) fn describe_statement(statement: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, statement);
    msg(fe::DESCRIBE, &body)
}

pub(super) fn flush() -> Vec<u8> {
    msg(fe::FLUSH, &[])
}

/// Parse, Bind, Describe of the portal, Execute and Sync (what libpq's PQexecParams sends).
pub(super) fn described_batch(sql: &str, params: &[&str]) -> Vec<Vec<u8>> {
    let mut frames = batch(sql, params);
    frames.insert(2, describe_portal(""));
    frames
}

//! Borrowed views of the server messages pgward inspects: authentication requests (to keep
//! SCRAM channel binding from being offered across two TLS legs), BackendKeyData (to hand the
//! client pgward's own cancel key), CommandComplete (row counts), ErrorResponse (SQLSTATE and
//! severity) and ReadyForQuery (transaction status).

use super::tag::backend as tag;
use super::{take_cstr, take_i32};

/// A server message that can end a statement or answer a client message, decoded once from its
/// tag and body. Only frames a session hands over whole are decoded; rows and everything else
/// stream past as [`Backend::Other`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend<'a> {
    /// `CommandComplete`: the rows its command tag counts.
    CommandComplete {
        rows: u64,
    },
    ErrorResponse(ErrorFields<'a>),
    EmptyQueryResponse,
    PortalSuspended,
    /// `ReadyForQuery`, with its transaction status (None if the byte is not one).
    ReadyForQuery(Option<TransactionStatus>),
    ParseComplete,
    BindComplete,
    CloseComplete,
    RowDescription,
    NoData,
    Other,
}

impl<'a> Backend<'a> {
    pub fn decode(kind: u8, body: &'a [u8]) -> Self {
        match kind {
            tag::COMMAND_COMPLETE => Backend::CommandComplete {
                rows: command_rows(body),
            },
            tag::ERROR_RESPONSE => Backend::ErrorResponse(error_fields(body)),
            tag::EMPTY_QUERY_RESPONSE => Backend::EmptyQueryResponse,
            tag::PORTAL_SUSPENDED => Backend::PortalSuspended,
            tag::READY_FOR_QUERY => Backend::ReadyForQuery(ready_status(body)),
            tag::PARSE_COMPLETE => Backend::ParseComplete,
            tag::BIND_COMPLETE => Backend::BindComplete,
            tag::CLOSE_COMPLETE => Backend::CloseComplete,
            tag::ROW_DESCRIPTION => Backend::RowDescription,
            tag::NO_DATA => Backend::NoData,
            _ => Backend::Other,
        }
    }

    /// The message ends the running Execute or statement of a Query.
    pub fn ends_statement(&self) -> bool {
        matches!(
            self,
            Backend::CommandComplete { .. }
                | Backend::ErrorResponse(_)
                | Backend::EmptyQueryResponse
                | Backend::PortalSuspended
        )
    }

    /// The message answers a Parse, Bind, Describe or Close.
    pub fn answers_alone(&self) -> bool {
        matches!(
            self,
            Backend::ParseComplete
                | Backend::BindComplete
                | Backend::CloseComplete
                | Backend::RowDescription
                | Backend::NoData
        )
    }
}

/// Authentication request codes in an 'R' message.
pub mod auth {
    pub const OK: i32 = 0;
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    pub const MD5_PASSWORD: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// The code of an authentication request ('R').
pub fn auth_code(body: &[u8]) -> Option<i32> {
    take_i32(body).map(|(code, _)| code)
}

/// The data after an authentication request's code: the md5 salt, a SASL challenge or outcome.
pub fn auth_data(body: &[u8]) -> &[u8] {
    take_i32(body).map_or(&[], |(_, data)| data)
}

/// The message field ('M') of an ErrorResponse or NoticeResponse.
pub fn error_message(body: &[u8]) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&kind, after)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let (value, after) = take_cstr(after)?;
        if kind == b'M' {
            return Some(value);
        }
        rest = after;
    }
    None
}

/// The columns of a DataRow ('D'), `None` for SQL NULL; `None` overall when the body does not
/// hold the columns it counts.
pub fn data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = super::take_u16(body)?;
    let mut columns = Vec::new();
    for _ in 0..count {
        let (len, after) = take_i32(rest)?;
        if len == -1 {
            columns.push(None);
            rest = after;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = after.get(..len)?;
        columns.push(Some(value));
        rest = after.get(len..)?;
    }
    rest.is_empty().then_some(columns)
}

/// Iterates the mechanism names of an AuthenticationSASL body (after the code).
pub fn sasl_mechanisms(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let Some((_, mut rest)) = take_i32(body) else {
        return out;
    };
    while let Some((name, after)) = take_cstr(rest) {
        if name.is_empty() {
            break;
        }
        out.push(name);
        rest = after;
    }
    out
}

/// BackendKeyData ('K'): process id and secret key (4 bytes in 3.0, longer in 3.2).
pub fn backend_key(body: &[u8]) -> Option<(u32, &[u8])> {
    let (pid, secret) = body.split_first_chunk::<4>()?;
    (!secret.is_empty()).then_some((u32::from_be_bytes(*pid), secret))
}

/// ParameterStatus ('S'): the name and value of a run-time parameter the server reports.
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = take_cstr(body)?;
    let (value, _) = take_cstr(rest)?;
    Some((name, value))
}

/// Transaction status in ReadyForQuery ('Z').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

pub fn ready_status(body: &[u8]) -> Option<TransactionStatus> {
    match body {
        [b'I'] => Some(TransactionStatus::Idle),
        [b'T'] => Some(TransactionStatus::InTransaction),
        [b'E'] => Some(TransactionStatus::Failed),
        _ => None,
    }
}

/// Rows affected or returned, from a CommandComplete ('C') tag such as `SELECT 5`,
/// `INSERT 0 3`, `COPY 100`; 0 for tags without a count (`CREATE TABLE`).
pub fn command_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if last.is_empty() || !last.iter().all(u8::is_ascii_digit) || last.len() == tag.len() {
        return 0;
    }
    last.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

/// The fields pgward reads from an ErrorResponse ('E').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    pub severity: &'a [u8],
    pub code: Option<[u8; 5]>,
}

impl ErrorFields<'_> {
    pub fn is_fatal(&self) -> bool {
        self.severity == b"FATAL" || self.severity == b"PANIC"
    }
}

pub fn error_fields(body: &[u8]) -> ErrorFields<'_> {
    let mut fields = ErrorFields {
        severity: b"ERROR",
        code: None,
    };
    let mut rest = body;
    while let Some((&kind, after)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, after)) = take_cstr(after) else {
            break;
        };
        match kind {
            b'V' => fields.severity = value,
            b'C' => fields.code = value.try_into().ok(),
            _ => {}
        }
        rest = after;
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_from_command_tags() {
        assert_eq!(command_rows(b"SELECT 5\0"), 5);
        assert_eq!(command_rows(b"INSERT 0 3\0"), 3);
        assert_eq!(command_rows(b"COPY 100000\0"), 100_000);
        assert_eq!(command_rows(b"CREATE TABLE\0"), 0);
        assert_eq!(command_rows(b"12\0"), 0);
        assert_eq!(command_rows(b""), 0);
    }

    #[test]
    fn data_rows_messages_and_auth_data() {
        assert_eq!(
            data_row(b"\0\x02\0\0\0\x02ab\xff\xff\xff\xff"),
            Some(vec![Some(&b"ab"[..]), None])
        );
        assert_eq!(data_row(b"\0\x01\0\0\0\x05ab"), None);
        assert_eq!(data_row(b"\0\x00extra"), None);
        let body = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0";
        assert_eq!(
            error_message(body),
            Some(&b"password authentication failed"[..])
        );
        assert_eq!(error_message(b"SERROR\0\0"), None);
        assert_eq!(auth_data(b"\0\0\0\x05salt"), b"salt");
    }

    #[test]
    fn error_fields_are_found() {
        let body = b"SERROR\0VFATAL\0C28P01\0Mpassword authentication failed\0\0";
        let f = error_fields(body);
        assert_eq!(f.code, Some(*b"28P01"));
        assert!(f.is_fatal());
        assert_eq!(error_fields(b"garbage").code, None);
    }

    #[test]
    fn sasl_mechanism_list() {
        let body = b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        assert_eq!(
            sasl_mechanisms(body),
            vec![&b"SCRAM-SHA-256-PLUS"[..], &b"SCRAM-SHA-256"[..]]
        );
        assert_eq!(auth_code(body), Some(auth::SASL));
    }

    #[test]
    fn decode_reads_each_body_once() {
        assert_eq!(
            Backend::decode(tag::COMMAND_COMPLETE, b"SELECT 5\0"),
            Backend::CommandComplete { rows: 5 }
        );
        let Backend::ErrorResponse(e) = Backend::decode(tag::ERROR_RESPONSE, b"C57014\0\0") else {
            panic!("not an error")
        };
        assert_eq!(e.code, Some(*b"57014"));
        assert_eq!(
            Backend::decode(tag::READY_FOR_QUERY, b"E"),
            Backend::ReadyForQuery(Some(TransactionStatus::Failed))
        );
        assert!(Backend::decode(tag::PORTAL_SUSPENDED, b"").ends_statement());
        assert!(Backend::decode(tag::NO_DATA, b"").answers_alone());
        assert_eq!(Backend::decode(tag::DATA_ROW, b""), Backend::Other);
    }

    #[test]
    fn keys_and_status() {
        assert_eq!(backend_key(b"\0\0\0\x07abcd"), Some((7, &b"abcd"[..])));
        assert_eq!(backend_key(b"\0\0\0\x07"), None);
        assert_eq!(ready_status(b"T"), Some(TransactionStatus::InTransaction));
        assert_eq!(ready_status(b"TT"), None);
    }
}

//! Builders for the messages pgward writes itself: errors and notices it raises, the cancel key
//! it hands clients, ReadyForQuery after a reply it produced, and a filtered SASL offer.

use super::backend::TransactionStatus;

/// Severity of an ErrorResponse pgward raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error or notice pgward raises, with the fields clients display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> Report<'a> {
    pub fn error(code: &'a str, message: &'a str) -> Self {
        Report {
            severity: Severity::Error,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: &'a str, message: &'a str) -> Self {
        Report {
            severity: Severity::Fatal,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn with_detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// Appends an ErrorResponse ('E').
    pub fn write_error(&self, out: &mut Vec<u8>) {
        self.write(b'E', self.severity.as_str(), out);
    }

    /// Appends a NoticeResponse ('N') with severity NOTICE.
    pub fn write_notice(&self, out: &mut Vec<u8>) {
        self.write(b'N', "NOTICE", out);
    }

    fn write(&self, tag: u8, severity: &str, out: &mut Vec<u8>) {
        let start = begin(out, tag);
        field(out, b'S', severity);
        field(out, b'V', severity);
        field(out, b'C', self.code);
        field(out, b'M', self.message);
        if let Some(detail) = self.detail {
            field(out, b'D', detail);
        }
        if let Some(hint) = self.hint {
            field(out, b'H', hint);
        }
        out.push(0);
        finish(out, start);
    }
}

fn field(out: &mut Vec<u8>, kind: u8, value: &str) {
    out.push(kind);
    // A NUL inside a value would end the field early; drop it rather than corrupt the frame.
    out.extend(value.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// Writes the tag and a placeholder length; returns the frame's start offset.
fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    let start = out.len();
    out.push(tag);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Fills in the length of the frame that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Appends ReadyForQuery ('Z').
pub fn ready_for_query(out: &mut Vec<u8>, status: TransactionStatus) {
    let start = begin(out, b'Z');
    out.push(match status {
        TransactionStatus::Idle => b'I',
        TransactionStatus::InTransaction => b'T',
        TransactionStatus::Failed => b'E',
    });
    finish(out, start);
}

/// Appends ParseComplete ('1').
pub fn parse_complete(out: &mut Vec<u8>) {
    super::frame::write(out, super::tag::backend::PARSE_COMPLETE, &[]);
}

/// Appends BindComplete ('2').
pub fn bind_complete(out: &mut Vec<u8>) {
    super::frame::write(out, super::tag::backend::BIND_COMPLETE, &[]);
}

/// Appends BackendKeyData ('K').
pub fn backend_key_data(out: &mut Vec<u8>, pid: u32, secret: &[u8]) {
    let start = begin(out, b'K');
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    finish(out, start);
}

/// Appends a Parse ('P') for `statement` with `sql` and declared parameter types; `None` (and
/// nothing appended) when there are more types than the protocol's 16-bit count can carry.
pub fn parse(out: &mut Vec<u8>, statement: &[u8], sql: &str, oids: &[u32]) -> Option<()> {
    if oids.len() > super::MAX_PARAMETERS {
        return None;
    }
    let count = u16::try_from(oids.len()).ok()?;
    let start = begin(out, super::tag::frontend::PARSE);
    out.extend_from_slice(statement);
    out.push(0);
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out.extend_from_slice(&count.to_be_bytes());
    for oid in oids {
        out.extend_from_slice(&oid.to_be_bytes());
    }
    finish(out, start);
    Some(())
}

/// Appends a Parse ('P') of `parse` under another statement name (transaction mode prepares a
/// client's statement under pgward's own name); the text and types are the client's bytes.
pub fn parse_renamed(out: &mut Vec<u8>, parse: &super::frontend::Parse<'_>, statement: &[u8]) {
    let start = begin(out, super::tag::frontend::PARSE);
    out.extend_from_slice(statement);
    out.push(0);
    out.extend_from_slice(parse.sql);
    out.push(0);
    out.extend_from_slice(&parse.param_type_count.to_be_bytes());
    out.extend_from_slice(parse.param_types);
    finish(out, start);
}

/// Appends a Bind ('B') of `bind` naming another statement; parameters as the client sent them.
pub fn bind_renamed(out: &mut Vec<u8>, bind: &super::frontend::Bind<'_>, statement: &[u8]) {
    let start = begin(out, super::tag::frontend::BIND);
    out.extend_from_slice(bind.portal);
    out.push(0);
    out.extend_from_slice(statement);
    out.push(0);
    out.extend_from_slice(bind.rest);
    finish(out, start);
}

/// Appends a Describe ('D') or Close ('C') (`tag`) of `target`.
pub fn describe_or_close(out: &mut Vec<u8>, tag: u8, target: super::frontend::Target<'_>) {
    let start = begin(out, tag);
    let name = match target {
        super::frontend::Target::Statement(name) => {
            out.push(super::frontend::TARGET_STATEMENT);
            name
        }
        super::frontend::Target::Portal(name) => {
            out.push(super::frontend::TARGET_PORTAL);
            name
        }
    };
    out.extend_from_slice(name);
    out.push(0);
    finish(out, start);
}

/// Appends a simple Query ('Q') with `sql`; `None` (and nothing appended) when the frame would
/// not fit the protocol's 32-bit length.
pub fn query(out: &mut Vec<u8>, sql: &str) -> Option<()> {
    i32::try_from(sql.len().checked_add(5)?).ok()?;
    out.reserve(sql.len() + 6);
    let start = begin(out, super::tag::frontend::QUERY);
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    finish(out, start);
    Some(())
}

/// What a client over `max_client_connections` is told, at accept or after its startup.
pub const TOO_MANY_CLIENTS: &str =
    "sorry, too many clients already (pgward max_client_connections)";

/// Appends Terminate ('X'), as a client ends its session.
pub fn terminate(out: &mut Vec<u8>) {
    let start = begin(out, super::tag::frontend::TERMINATE);
    finish(out, start);
}

/// Appends AuthenticationSASL ('R', code 10) offering `mechanisms`.
pub fn auth_sasl(out: &mut Vec<u8>, mechanisms: &[&[u8]]) {
    let start = begin(out, b'R');
    out.extend_from_slice(&10i32.to_be_bytes());
    for m in mechanisms {
        out.extend_from_slice(m);
        out.push(0);
    }
    out.push(0);
    finish(out, start);
}

/// Appends an Authentication message ('R') with `code` and `data` (Ok = 0, CleartextPassword
/// = 3, SASL continue = 11, SASL final = 12).
pub fn authentication(out: &mut Vec<u8>, code: i32, data: &[u8]) {
    let start = begin(out, b'R');
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(data);
    finish(out, start);
}

/// Appends a PasswordMessage ('p'): a cleartext password or an md5 response, as a client
/// answers AuthenticationCleartextPassword / AuthenticationMD5Password.
pub fn password_message(out: &mut Vec<u8>, password: &[u8]) {
    let start = begin(out, super::tag::frontend::PASSWORD);
    out.extend(password.iter().copied().filter(|&b| b != 0));
    out.push(0);
    finish(out, start);
}

/// Appends a SASLInitialResponse ('p'): the chosen mechanism and the client-first message;
/// `None` (nothing appended) when `data` does not fit the protocol's 32-bit length.
pub fn sasl_initial_response(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) -> Option<()> {
    let len = i32::try_from(data.len()).ok()?;
    let start = begin(out, super::tag::frontend::PASSWORD);
    cstr(out, mechanism);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    finish(out, start);
    Some(())
}

/// Appends a SASLResponse ('p') carrying one SASL message of the client.
pub fn sasl_response(out: &mut Vec<u8>, data: &[u8]) {
    let start = begin(out, super::tag::frontend::PASSWORD);
    out.extend_from_slice(data);
    finish(out, start);
}

/// Appends ParameterStatus ('S').
pub fn parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    let start = begin(out, b'S');
    cstr(out, name);
    cstr(out, value);
    finish(out, start);
}

fn cstr(out: &mut Vec<u8>, value: &str) {
    out.extend(value.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// The `text` type's oid: every column pgward describes itself is text.
const TEXT_OID: u32 = 25;

/// Appends RowDescription ('T') for text columns named `columns`, in text format.
pub fn row_description(out: &mut Vec<u8>, columns: &[&str]) {
    let start = begin(out, b'T');
    let count = u16::try_from(columns.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for name in columns.iter().take(usize::from(count)) {
        cstr(out, name);
        out.extend_from_slice(&0u32.to_be_bytes()); // table oid
        out.extend_from_slice(&0u16.to_be_bytes()); // column number
        out.extend_from_slice(&TEXT_OID.to_be_bytes());
        out.extend_from_slice(&(-1i16).to_be_bytes()); // variable size
        out.extend_from_slice(&(-1i32).to_be_bytes()); // no type modifier
        out.extend_from_slice(&0u16.to_be_bytes()); // text format
    }
    finish(out, start);
}

/// Appends DataRow ('D'): `None` is SQL NULL.
pub fn data_row(out: &mut Vec<u8>, values: &[Option<&str>]) {
    let start = begin(out, b'D');
    let count = u16::try_from(values.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for value in values.iter().take(usize::from(count)) {
        match value {
            Some(text) => {
                let len = i32::try_from(text.len()).unwrap_or(i32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend(text.bytes().take(usize::try_from(len).unwrap_or(0)));
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    finish(out, start);
}

/// Appends EmptyQueryResponse ('I'), the answer to a query string with no statement.
pub fn empty_query_response(out: &mut Vec<u8>) {
    let start = begin(out, b'I');
    finish(out, start);
}

/// Appends CommandComplete ('C') with its command tag (`SHOW`, `SELECT 3`, ...).
pub fn command_complete(out: &mut Vec<u8>, command_tag: &str) {
    let start = begin(out, b'C');
    cstr(out, command_tag);
    finish(out, start);
}

#[cfg(test)]
mod tests {
    use super::super::{backend, frame};
    use super::*;

    #[test]
    fn error_response_is_well_formed() {
        let mut out = Vec::new();
        Report::error("57014", "canceling statement")
            .with_hint("raise the budget")
            .write_error(&mut out);
        let header = frame::parse_header(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(header.tag, b'E');
        assert_eq!(header.frame_len(), out.len());
        let fields = backend::error_fields(&out[5..]);
        assert_eq!(fields.code, Some(*b"57014"));
        assert!(!fields.is_fatal());
        assert!(out.windows(16).any(|w| w == b"Hraise the budge"));
    }

    #[test]
    fn nul_in_message_does_not_break_framing() {
        let mut out = Vec::new();
        Report::fatal("08P01", "bad\0message").write_error(&mut out);
        let header = frame::parse_header(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(header.frame_len(), out.len());
        assert!(backend::error_fields(&out[5..]).is_fatal());
    }

    #[test]
    fn rows_are_framed_with_nulls_and_text_columns() {
        let mut out = Vec::new();
        row_description(&mut out, &["id", "state"]);
        let header = frame::parse_header(&out, 1 << 20).unwrap().unwrap();
        assert_eq!((header.tag, header.frame_len()), (b'T', out.len()));
        assert_eq!(out.len(), 5 + 2 + (3 + 18) + (6 + 18));
        out.clear();
        data_row(&mut out, &[Some("7"), None]);
        assert_eq!(out, b"D\0\0\0\x0f\0\x02\0\0\0\x017\xff\xff\xff\xff");
        out.clear();
        command_complete(&mut out, "SHOW");
        assert_eq!(out, b"C\0\0\0\x09SHOW\0");
    }

    #[test]
    fn small_messages() {
        let mut out = Vec::new();
        ready_for_query(&mut out, TransactionStatus::Failed);
        assert_eq!(out, b"Z\0\0\0\x05E");
        out.clear();
        backend_key_data(&mut out, 9, &[1, 2, 3, 4]);
        assert_eq!(out, b"K\0\0\0\x0c\0\0\0\x09\x01\x02\x03\x04");
        out.clear();
        auth_sasl(&mut out, &[b"SCRAM-SHA-256"]);
        assert_eq!(
            backend::sasl_mechanisms(&out[5..]),
            vec![&b"SCRAM-SHA-256"[..]]
        );
    }

    #[test]
    fn client_auth_messages() {
        let mut out = Vec::new();
        password_message(&mut out, b"md5abc");
        assert_eq!(out, b"p\0\0\0\x0bmd5abc\0");
        out.clear();
        sasl_initial_response(&mut out, "SCRAM-SHA-256", b"n,,n=,r=x").unwrap();
        assert_eq!(out, b"p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x");
        out.clear();
        sasl_response(&mut out, b"c=biws");
        assert_eq!(out, b"p\0\0\0\x0ac=biws");
    }
}

//! Borrowed views of the client messages pgward inspects (Query, Parse, Bind, Execute, Describe,
//! Close). Each view borrows the frame body, so inspecting a frame allocates nothing and the
//! original bytes stay available for forwarding.

use super::tag::frontend as tag;
use super::{take_cstr, take_i32, take_u16};

/// A client message, decoded once from its tag and body. The kinds pgward reads carry their
/// borrowed view, or `None` when the body does not parse: such a frame is still forwarded as it
/// came, and PostgreSQL answers it with its own protocol error.
#[derive(Debug, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// Simple `Query`: its SQL text.
    Query(Option<&'a [u8]>),
    Parse(Option<Parse<'a>>),
    Bind(Option<Bind<'a>>),
    Execute(Option<Execute<'a>>),
    Describe(Option<Target<'a>>),
    Close(Option<Target<'a>>),
    Sync,
    Flush,
    FunctionCall,
    /// Everything pgward passes through unread (Copy*, Terminate, ...).
    Other,
}

impl<'a> Frontend<'a> {
    pub fn decode(kind: u8, body: &'a [u8]) -> Self {
        match kind {
            tag::QUERY => Frontend::Query(query(body)),
            tag::PARSE => Frontend::Parse(parse(body)),
            tag::BIND => Frontend::Bind(bind(body)),
            tag::EXECUTE => Frontend::Execute(execute(body)),
            tag::DESCRIBE => Frontend::Describe(describe_or_close(body)),
            tag::CLOSE => Frontend::Close(describe_or_close(body)),
            tag::SYNC => Frontend::Sync,
            tag::FLUSH => Frontend::Flush,
            tag::FUNCTION_CALL => Frontend::FunctionCall,
            _ => Frontend::Other,
        }
    }

    /// Parse, Bind, Describe and Close get one answer of their own from the server
    /// (ParseComplete, BindComplete, ParameterDescription + RowDescription / NoData,
    /// CloseComplete), or are skipped after an error in their batch.
    pub fn is_answered_alone(&self) -> bool {
        matches!(
            self,
            Frontend::Parse(_) | Frontend::Bind(_) | Frontend::Describe(_) | Frontend::Close(_)
        )
    }
}

/// Body of a simple `Query` ('Q'): the SQL text without its terminating NUL.
pub fn query(body: &[u8]) -> Option<&[u8]> {
    let (sql, rest) = take_cstr(body)?;
    rest.is_empty().then_some(sql)
}

/// SASLInitialResponse ('p' during SASL): the mechanism chosen and its first message (a
/// length of -1, no data, gives an empty message).
pub fn sasl_initial_response(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mechanism, rest) = take_cstr(body)?;
    let (len, data) = take_i32(rest)?;
    match usize::try_from(len) {
        Ok(len) if len == data.len() => Some((mechanism, data)),
        Err(_) if len == -1 && data.is_empty() => Some((mechanism, data)),
        _ => None,
    }
}

/// PasswordMessage ('p' after AuthenticationMD5Password or CleartextPassword): the password or
/// md5 response, without its terminating NUL.
pub fn password_message(body: &[u8]) -> Option<&[u8]> {
    let (password, rest) = take_cstr(body)?;
    rest.is_empty().then_some(password)
}

/// `Parse` ('P'): statement name (empty = unnamed), SQL text, declared parameter types.
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a [u8],
    pub sql: &'a [u8],
    /// PostgreSQL reads this Int16 as unsigned (`pq_getmsgint` returns `unsigned int`), so a
    /// Parse may declare up to 65,535 types; reading it signed would refuse 32,768 and above.
    pub param_type_count: u16,
    /// The declared parameter type OIDs, 4 bytes each.
    pub param_types: &'a [u8],
}

impl Parse<'_> {
    /// The declared type OID of parameter `i` (0 = unspecified).
    pub fn param_type(&self, i: usize) -> u32 {
        // `i` comes from callers' loops, not the wire, but an index near usize::MAX must still
        // answer 0 rather than overflow the offset.
        let oid = || {
            let start = i.checked_mul(4)?;
            let bytes = self.param_types.get(start..start.checked_add(4)?)?;
            Some(u32::from_be_bytes(*bytes.first_chunk::<4>()?))
        };
        oid().unwrap_or(0)
    }
}

pub fn parse(body: &[u8]) -> Option<Parse<'_>> {
    let (statement, rest) = take_cstr(body)?;
    let (sql, rest) = take_cstr(rest)?;
    let (param_type_count, rest) = take_u16(rest)?;
    (rest.len() == usize::from(param_type_count) * 4).then_some(Parse {
        statement,
        sql,
        param_type_count,
        param_types: rest,
    })
}

/// `Bind` ('B'): the portal it creates and the statement it binds. Parameter values stay in
/// `rest` (formats, values, result formats), undecoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    pub rest: &'a [u8],
}

pub fn bind(body: &[u8]) -> Option<Bind<'_>> {
    let (portal, rest) = take_cstr(body)?;
    let (statement, rest) = take_cstr(rest)?;
    Some(Bind {
        portal,
        statement,
        rest,
    })
}

/// `Execute` ('E'): portal name and row limit (0 = all rows).
#[derive(Debug, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a [u8],
    pub max_rows: i32,
}

pub fn execute(body: &[u8]) -> Option<Execute<'_>> {
    let (portal, rest) = take_cstr(body)?;
    let (max_rows, rest) = take_i32(rest)?;
    rest.is_empty().then_some(Execute { portal, max_rows })
}

/// What a `Describe` ('D') or `Close` ('C') targets.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Target<'a> {
    Statement(&'a [u8]),
    Portal(&'a [u8]),
}

/// The kind byte of a Describe / Close of a prepared statement.
pub const TARGET_STATEMENT: u8 = b'S';
/// The kind byte of a Describe / Close of a portal.
pub const TARGET_PORTAL: u8 = b'P';

pub fn describe_or_close(body: &[u8]) -> Option<Target<'_>> {
    let (&kind, rest) = body.split_first()?;
    let (name, rest) = take_cstr(rest)?;
    if !rest.is_empty() {
        return None;
    }
    match kind {
        TARGET_STATEMENT => Some(Target::Statement(name)),
        TARGET_PORTAL => Some(Target::Portal(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_initial_response_checks_its_length() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"n,,");
        assert_eq!(
            sasl_initial_response(&body),
            Some((&b"SCRAM-SHA-256"[..], &b"n,,"[..]))
        );
        body.push(b'x');
        assert_eq!(sasl_initial_response(&body), None);
        assert_eq!(
            sasl_initial_response(b"SCRAM\0\xff\xff\xff\xff").map(|m| m.1.len()),
            Some(0)
        );
        assert_eq!(sasl_initial_response(b"SCRAM"), None);
    }

    #[test]
    fn query_needs_exactly_one_terminator() {
        assert_eq!(query(b"select 1\0"), Some(&b"select 1"[..]));
        assert_eq!(query(b"select 1"), None);
        assert_eq!(query(b"a\0b\0"), None);
    }

    #[test]
    fn parse_checks_the_parameter_type_array() {
        let body = b"s1\0select $1\0\0\x01\0\0\0\x17";
        assert_eq!(
            parse(body),
            Some(Parse {
                statement: b"s1",
                sql: b"select $1",
                param_type_count: 1,
                param_types: &[0, 0, 0, 0x17],
            })
        );
        assert_eq!(parse(body).map(|p| p.param_type(0)), Some(23));
        assert_eq!(parse(b"s1\0select $1\0\0\x02\0\0\0\x17"), None);
        assert_eq!(parse(b"s1\0select"), None);
    }

    fn parse_body(count: u16, types: usize) -> Vec<u8> {
        let mut body = b"s\0select 1\0".to_vec();
        body.extend_from_slice(&count.to_be_bytes());
        body.extend(std::iter::repeat_n([0, 0, 0, 0x19], types).flatten());
        body
    }

    #[test]
    fn parse_accepts_up_to_65535_declared_parameter_types() {
        for count in [32_767u16, 32_768, 65_535] {
            let body = parse_body(count, usize::from(count));
            let p = parse(&body).unwrap_or_else(|| panic!("{count} types refused"));
            assert_eq!(p.param_type_count, count);
            assert_eq!(p.param_type(usize::from(count) - 1), 25);
        }
        assert_eq!(parse(&parse_body(65_535, 65_534)), None);
    }

    #[test]
    fn param_type_past_the_end_or_at_an_overflowing_index_is_unspecified() {
        let body = parse_body(2, 2);
        let p = parse(&body).unwrap();
        assert_eq!((p.param_type(1), p.param_type(2)), (25, 0));
        for i in [
            usize::MAX / 4,
            usize::MAX / 4 + 1,
            usize::MAX - 3,
            usize::MAX,
        ] {
            assert_eq!(p.param_type(i), 0, "{i}");
        }
    }

    #[test]
    fn decode_names_each_kind_and_keeps_malformed_bodies_as_none() {
        assert_eq!(
            Frontend::decode(tag::QUERY, b"select 1\0"),
            Frontend::Query(Some(b"select 1"))
        );
        assert_eq!(Frontend::decode(tag::QUERY, b"x"), Frontend::Query(None));
        assert_eq!(
            Frontend::decode(tag::EXECUTE, b"\0"),
            Frontend::Execute(None)
        );
        assert_eq!(
            Frontend::decode(tag::CLOSE, b"Sname\0"),
            Frontend::Close(Some(Target::Statement(b"name")))
        );
        assert_eq!(Frontend::decode(tag::SYNC, b""), Frontend::Sync);
        assert_eq!(Frontend::decode(tag::FLUSH, b""), Frontend::Flush);
        assert_eq!(Frontend::decode(tag::COPY_DONE, b""), Frontend::Other);
        assert!(Frontend::decode(tag::DESCRIBE, b"").is_answered_alone());
        assert!(!Frontend::decode(tag::EXECUTE, b"").is_answered_alone());
    }

    #[test]
    fn bind_execute_describe_close() {
        let b = bind(b"p\0s\0\0\0\0\0\0\0").unwrap();
        assert_eq!((b.portal, b.statement), (&b"p"[..], &b"s"[..]));
        assert_eq!(
            execute(b"\0\0\0\0\x05"),
            Some(Execute {
                portal: b"",
                max_rows: 5
            })
        );
        assert_eq!(execute(b"\0\0\0"), None);
        assert_eq!(
            describe_or_close(b"Sname\0"),
            Some(Target::Statement(b"name"))
        );
        assert_eq!(describe_or_close(b"P\0"), Some(Target::Portal(b"")));
        assert_eq!(describe_or_close(b"X\0"), None);
    }
}

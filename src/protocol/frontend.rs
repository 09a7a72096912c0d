//! Borrowed views of the client messages pgward inspects (Query, Parse, Bind, Execute, Describe,
//! Close). Each view borrows the frame body, so inspecting a frame allocates nothing and the
//! original bytes stay available for forwarding.

use super::{take_cstr, take_i16, take_i32};

/// Body of a simple `Query` ('Q'): the SQL text without its terminating NUL.
pub fn query(body: &[u8]) -> Option<&[u8]> {
    let (sql, rest) = take_cstr(body)?;
    rest.is_empty().then_some(sql)
}

/// `Parse` ('P'): statement name (empty = unnamed), SQL text, declared parameter types.
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a [u8],
    pub sql: &'a [u8],
    pub param_type_count: i16,
    /// The declared parameter type OIDs, 4 bytes each.
    pub param_types: &'a [u8],
}

impl Parse<'_> {
    /// The declared type OID of parameter `i` (0 = unspecified).
    pub fn param_type(&self, i: usize) -> u32 {
        self.param_types
            .get(i * 4..i * 4 + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub fn parse(body: &[u8]) -> Option<Parse<'_>> {
    let (statement, rest) = take_cstr(body)?;
    let (sql, rest) = take_cstr(rest)?;
    let (param_type_count, rest) = take_i16(rest)?;
    (param_type_count >= 0 && rest.len() == param_type_count as usize * 4).then_some(Parse {
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

pub fn describe_or_close(body: &[u8]) -> Option<Target<'_>> {
    let (&kind, rest) = body.split_first()?;
    let (name, rest) = take_cstr(rest)?;
    if !rest.is_empty() {
        return None;
    }
    match kind {
        b'S' => Some(Target::Statement(name)),
        b'P' => Some(Target::Portal(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

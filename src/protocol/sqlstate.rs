//! The SQLSTATE codes pgward raises itself, named as in PostgreSQL's errcodes.txt.

pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const QUERY_CANCELED: &str = "57014";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const INSUFFICIENT_RESOURCES: &str = "53000";
pub const WARNING: &str = "01000";
pub const INTERNAL_ERROR: &str = "XX000";
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
pub const INVALID_PASSWORD: &str = "28P01";
pub const SYNTAX_ERROR: &str = "42601";
pub const UNDEFINED_OBJECT: &str = "42704";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const CONFIG_FILE_ERROR: &str = "F0000";

/// A code as the five bytes `backend::error_fields` reads from an ErrorResponse.
pub const fn bytes(code: &str) -> [u8; 5] {
    match code.as_bytes() {
        [a, b, c, d, e] => [*a, *b, *c, *d, *e],
        // Every code above has five characters; a wrong one fails the build (const context).
        _ => panic!("a SQLSTATE has five characters"),
    }
}

/// `QUERY_CANCELED` as bytes, to compare with a server's error code.
pub const QUERY_CANCELED_BYTES: [u8; 5] = bytes(QUERY_CANCELED);
/// `INTERNAL_ERROR` as bytes: the code recorded for an ErrorResponse that carries none.
pub const INTERNAL_ERROR_BYTES: [u8; 5] = bytes(INTERNAL_ERROR);

/// The failure is the server's, not the statement's: connection exception (class 08),
/// insufficient resources (53) or operator intervention (57) — a cached result may stand in.
pub fn is_server_failure(code: &[u8; 5]) -> bool {
    matches!(code, [b'0', b'8', ..] | [b'5', b'3', ..] | [b'5', b'7', ..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_failures_are_classes_08_53_57() {
        for code in [b"08006", b"53300", b"57014", b"57P01"] {
            assert!(super::is_server_failure(code), "{code:?}");
        }
        for code in [b"42P01", b"22012", b"XX000", b"23505"] {
            assert!(!super::is_server_failure(code), "{code:?}");
        }
    }
}

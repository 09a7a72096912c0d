//! What pgward holds for a user it authenticates: a SCRAM-SHA-256 verifier, an md5 hash or a
//! plaintext password, in the text forms PostgreSQL stores in `pg_authid.rolpassword` (and
//! PgBouncer reads from its `auth_file`). Parsed once when loaded; never printed: `Debug`
//! shows only the kind, and parse errors say what is wrong without quoting the secret.

use std::fmt;
use std::num::NonZeroU32;

use thiserror::Error;

use super::scram::base64_decode;

/// Bytes of a SHA-256 key (StoredKey, ServerKey).
pub const KEY_LEN: usize = 32;

/// A user's stored secret.
pub enum Secret {
    Scram(ScramVerifier),
    Md5(Md5Hash),
    Plain(Plaintext),
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: NonZeroU32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

/// `md5` + hex(md5(password || user)): the 32 lowercase hex digits, as ASCII.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Hash(pub [u8; 32]);

/// A password kept as written (for SCRAM, its keys are derived at login).
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramVerifier(iterations {}, ..)", self.iterations)
    }
}

/// Why a secret's text is not usable. The messages never contain the secret.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret is empty")]
    Empty,
    #[error("the secret starts like a SCRAM-SHA-256 verifier but is malformed: {0}")]
    MalformedScram(&'static str),
}

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

impl Secret {
    /// Reads a stored secret as PostgreSQL classifies `rolpassword`: `md5` and 32 hex digits is
    /// an md5 hash, `SCRAM-SHA-256$...` a verifier, anything else plaintext. Unlike PostgreSQL,
    /// a malformed verifier is refused rather than taken for a plaintext password, so a
    /// copy-paste accident is reported instead of locking the user out silently.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        if let Some(hash) = md5_hash(text) {
            return Ok(Secret::Md5(hash));
        }
        if let Some(rest) = text.strip_prefix(SCRAM_PREFIX) {
            return scram_verifier(rest).map(Secret::Scram);
        }
        Ok(Secret::Plain(Plaintext(text.to_owned())))
    }

    /// "SCRAM-SHA-256 verifier", "md5 hash" or "plaintext": for logs and `Debug`.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Scram(_) => "SCRAM-SHA-256 verifier",
            Secret::Md5(_) => "md5 hash",
            Secret::Plain(_) => "plaintext",
        }
    }
}

fn md5_hash(text: &str) -> Option<Md5Hash> {
    let hex = text.strip_prefix("md5")?;
    let bytes: [u8; 32] = hex.as_bytes().try_into().ok()?;
    bytes
        .iter()
        .all(u8::is_ascii_hexdigit)
        .then(|| Md5Hash(bytes.map(|b| b.to_ascii_lowercase())))
}

fn scram_verifier(rest: &str) -> Result<ScramVerifier, SecretError> {
    let malformed = SecretError::MalformedScram;
    let (params, keys) = rest
        .split_once('$')
        .ok_or(malformed("no '$' before the keys"))?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or(malformed("no ':' between iterations and salt"))?;
    let iterations = iterations
        .parse::<u32>()
        .ok()
        .filter(|&i| i32::try_from(i).is_ok())
        .and_then(NonZeroU32::new)
        .ok_or(malformed("the iteration count is not a positive integer"))?;
    let salt = base64_decode(salt)
        .filter(|s| !s.is_empty())
        .ok_or(malformed("the salt is not base64"))?;
    let (stored, server) = keys
        .split_once(':')
        .ok_or(malformed("no ':' between StoredKey and ServerKey"))?;
    let key = |text: &str, what| {
        base64_decode(text)
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .ok_or(malformed(what))
    };
    Ok(ScramVerifier {
        iterations,
        salt,
        stored_key: key(stored, "StoredKey is not 32 bytes of base64")?,
        server_key: key(server, "ServerKey is not 32 bytes of base64")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::auth::vectors::{MD5_SECRET, SCRAM_VERIFIER as PG_VERIFIER};

    #[test]
    fn each_kind_is_recognised() {
        match Secret::parse(PG_VERIFIER).unwrap() {
            Secret::Scram(v) => {
                assert_eq!(v.iterations.get(), 4096);
                assert_eq!(v.salt.len(), 16);
            }
            other => panic!("{other:?}"),
        }
        match Secret::parse(MD5_SECRET).unwrap() {
            Secret::Md5(Md5Hash(hex)) => assert_eq!(&hex, b"cf2eb91161e673512c698f154f5e688d"),
            other => panic!("{other:?}"),
        }
        // Upper-case hex digits are read as the same hash.
        let upper = format!("md5{}", MD5_SECRET[3..].to_ascii_uppercase());
        assert!(
            matches!(Secret::parse(&upper), Ok(Secret::Md5(h)) if &h.0 == b"cf2eb91161e673512c698f154f5e688d")
        );
        // Not 32 hex digits: a plaintext password that happens to start with "md5".
        for plain in [
            "md5-secret",
            "md5a4d5f6e7c8b9a0d1e2f3a4b5c6d7e8fz",
            "hunter2",
        ] {
            assert!(
                matches!(Secret::parse(plain), Ok(Secret::Plain(_))),
                "{plain}"
            );
        }
        assert_eq!(Secret::parse("").unwrap_err(), SecretError::Empty);
    }

    #[test]
    fn malformed_verifiers_are_refused_without_echoing_them() {
        let cases = [
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:not base64$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=",
            "SCRAM-SHA-256$99999999999:c2FsdA==$AAAA:AAAA",
        ];
        for text in cases {
            let e = Secret::parse(text).unwrap_err().to_string();
            assert!(e.contains("malformed"), "{text}: {e}");
            assert!(!e.contains("c2Fsd"), "{e}");
        }
    }

    #[test]
    fn debug_shows_the_kind_only() {
        let secret = Secret::parse("hunter2").unwrap();
        assert_eq!(format!("{secret:?}"), "plaintext");
        let scram = Secret::parse(PG_VERIFIER).unwrap();
        assert!(!format!("{scram:?}").contains("z0k+"));
    }
}

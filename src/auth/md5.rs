//! The server side of md5 password authentication: the stored hash is hex(md5(password ||
//! user)) and the client answers AuthenticationMD5Password's 4-byte salt with
//! `md5` + hex(md5(stored hex || salt)). md5 is what older clients and `password_encryption =
//! md5` roles have; SCRAM-SHA-256 is preferred wherever the secret allows it.

use md5::{Digest, Md5};

use super::secret::Md5Hash;

/// hex(md5(password || user)): what PostgreSQL stores (after `md5`) for an md5 role.
pub fn hash(password: &str, user: &str) -> Md5Hash {
    let mut md5 = Md5::new();
    md5.update(password.as_bytes());
    md5.update(user.as_bytes());
    Md5Hash(hex(&md5.finalize()))
}

/// True when `response` (a PasswordMessage's text) is the answer to `salt` for `stored`.
pub fn verify(stored: &Md5Hash, salt: [u8; 4], response: &[u8]) -> bool {
    let mut md5 = Md5::new();
    md5.update(stored.0);
    md5.update(salt);
    let mut expected = *b"md5________________________________";
    for (e, h) in expected.iter_mut().skip(3).zip(hex(&md5.finalize())) {
        *e = h;
    }
    crate::secret::constant_time_eq(&expected, response)
}

/// Lowercase hex of a 16-byte digest.
fn hex(digest: &[u8]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        for (slot, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0f]) {
            *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secret::Secret;
    use crate::auth::vectors::{MD5_PASSWORD, MD5_SECRET, MD5_USER};

    /// The hash PostgreSQL stored for the role is the hash of its password and name.
    #[test]
    fn the_hash_is_the_one_postgresql_stored() {
        let Ok(Secret::Md5(stored)) = Secret::parse(MD5_SECRET) else {
            panic!("not an md5 secret");
        };
        assert!(hash(MD5_PASSWORD, MD5_USER) == stored);
        assert!(hash(MD5_PASSWORD, "other_user") != stored);
    }

    /// rust-postgres' client response (an independent implementation) verifies; others do not.
    #[test]
    fn a_client_response_verifies_against_the_stored_hash() {
        let Ok(Secret::Md5(stored)) = Secret::parse(MD5_SECRET) else {
            panic!("not an md5 secret");
        };
        let salt = [0x2a, 0x3d, 0x8f, 0xe0];
        let good = postgres_protocol::authentication::md5_hash(
            MD5_USER.as_bytes(),
            MD5_PASSWORD.as_bytes(),
            salt,
        );
        assert!(verify(&stored, salt, good.as_bytes()));
        assert!(!verify(&stored, [0, 0, 0, 0], good.as_bytes()));
        let wrong =
            postgres_protocol::authentication::md5_hash(MD5_USER.as_bytes(), b"wrong", salt);
        assert!(!verify(&stored, salt, wrong.as_bytes()));
        assert!(!verify(&stored, salt, &good.as_bytes()[..34]));
        assert!(!verify(&stored, salt, b""));
    }
}

//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, sans IO:
//! the client's first message in, the server's first out, the client's proof checked against a
//! stored verifier (StoredKey, ServerKey: what `pg_authid` keeps, so the password itself is not
//! needed), the server's signature out. The user name inside the exchange is ignored
//! (PostgreSQL takes it from the startup packet); channel binding is not offered. Primitives
//! come from `ring`, already in the build for TLS (why not pgwire's: docs/adr/0007).

use std::borrow::Cow;
use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};
use thiserror::Error;

use super::secret::{KEY_LEN, ScramVerifier};

/// Iterations of a verifier derived from a plaintext password, PostgreSQL's default
/// (`scram_iterations`).
pub const ITERATIONS: NonZeroU32 = NonZeroU32::new(4096).expect("4096 is not zero");

/// Why an exchange failed; the client is told only that authentication failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding was requested but is not offered")]
    ChannelBinding,
    #[error("wrong password")]
    WrongProof,
}

/// The verifier of `password` with `salt`: PostgreSQL's `scram_build_secret`. The password is
/// SASLprep-normalized first, as PostgreSQL does and as libpq does on its side; one that
/// SASLprep refuses is used as it is (PostgreSQL's fallback too).
pub fn derive(password: &str, salt: &[u8], iterations: NonZeroU32) -> ScramVerifier {
    let normalized = stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        normalized.as_bytes(),
        &mut salted,
    );
    let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&salted, b"Client Key");
    let server_key = hmac::sign(&salted, b"Server Key");
    ScramVerifier {
        iterations,
        salt: salt.to_vec(),
        stored_key: key(digest::digest(&digest::SHA256, client_key.as_ref()).as_ref()),
        server_key: key(server_key.as_ref()),
    }
}

/// A SHA-256 output as a fixed array (ring's outputs are slices of exactly this length).
fn key(bytes: &[u8]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

/// An exchange after the server's first message.
pub struct Exchange<'a> {
    verifier: &'a ScramVerifier,
    /// What the client's final message must echo in `c=` (its GS2 header, base64).
    channel: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// Reads the client's first message and answers it with `server_nonce` and the verifier's salt
/// and iteration count.
pub fn client_first<'a>(
    message: &[u8],
    verifier: &'a ScramVerifier,
    server_nonce: &str,
) -> Result<Exchange<'a>, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (gs2, bare) = match text.split_once(",,") {
        Some((flag @ ("n" | "y"), bare)) => (format!("{flag},,"), bare),
        Some((flag, _)) if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("GS2 header")),
    };
    let mut attrs = bare.split(',');
    if !attrs.next().is_some_and(|user| user.starts_with("n=")) {
        return Err(ScramError::Malformed("user name attribute"));
    }
    let client_nonce = attrs
        .next()
        .and_then(|attr| attr.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(is_nonce_char))
        .ok_or(ScramError::Malformed("client nonce"))?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        base64_encode(&verifier.salt),
        verifier.iterations
    );
    Ok(Exchange {
        verifier,
        channel: base64_encode(gs2.as_bytes()),
        nonce,
        client_first_bare: bare.to_owned(),
        server_first,
    })
}

/// RFC 5802's `printable`: ASCII 0x21..=0x7E except the comma.
fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

impl Exchange<'_> {
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client's proof; returns the server's final message (`v=...`).
    pub fn client_final(&self, message: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("proof"))?;
        let mut attrs = without_proof.split(',');
        if attrs.next().and_then(|c| c.strip_prefix("c=")) != Some(self.channel.as_str()) {
            return Err(ScramError::Malformed("channel binding data"));
        }
        if attrs.next().and_then(|r| r.strip_prefix("r=")) != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce"));
        }
        let proof = base64_decode(proof).ok_or(ScramError::Malformed("proof encoding"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let stored_key = &self.verifier.stored_key;
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key),
            auth_message.as_bytes(),
        );
        if proof.len() != KEY_LEN {
            return Err(ScramError::WrongProof);
        }
        // The client's key is its proof XOR the signature; its hash must be the stored key.
        let recovered: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let hashed = digest::digest(&digest::SHA256, &recovered);
        if !crate::secret::constant_time_eq(hashed.as_ref(), stored_key) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.verifier.server_key),
            auth_message.as_bytes(),
        );
        Ok(format!("v={}", base64_encode(server_signature.as_ref())))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what SCRAM uses).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; `None` on anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let value = if i >= 4 - pad {
                0
            } else {
                u32::try_from(ALPHABET.iter().position(|&a| a == c)?).ok()?
            };
            n = n << 6 | value;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(decoded.get(..3 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::auth::secret::Secret;
    use crate::auth::vectors;

    fn verifier_of(text: &str) -> ScramVerifier {
        match Secret::parse(text).unwrap() {
            Secret::Scram(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// The exchange of RFC 7677 section 3 (user "user", password "pencil").
    #[test]
    fn the_rfc_7677_example_verifies_and_signs() {
        let salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = derive("pencil", &salt, ITERATIONS);
        let exchange = client_first(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            &verifier,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            exchange.server_first(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let final_message = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.client_final(final_message.as_bytes()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let wrong = final_message.replace("p=dH", "p=eH");
        assert_eq!(
            exchange.client_final(wrong.as_bytes()),
            Err(ScramError::WrongProof)
        );
    }

    /// Keys derived from the plaintext with PostgreSQL's salt are PostgreSQL's own keys,
    /// SASLprep included.
    #[test]
    fn derived_keys_match_the_verifiers_postgresql_stored() {
        for (password, stored) in [
            (vectors::SCRAM_PASSWORD, vectors::SCRAM_VERIFIER),
            (vectors::UNICODE_PASSWORD, vectors::UNICODE_VERIFIER),
        ] {
            let pg = verifier_of(stored);
            assert!(derive(password, &pg.salt, pg.iterations) == pg, "{stored}");
        }
        let pg = verifier_of(vectors::UNICODE_VERIFIER);
        assert!(derive("pa ss\u{df}", &pg.salt, pg.iterations) == pg);
        assert!(derive("wrong", &pg.salt, pg.iterations) != pg);
    }

    /// rust-postgres' SCRAM client (an independent implementation) logs in against the
    /// verifier PostgreSQL stored.
    #[test]
    fn a_client_proves_the_password_against_a_postgresql_verifier() {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let verifier = verifier_of(vectors::SCRAM_VERIFIER);
        for (password, ok) in [(vectors::SCRAM_PASSWORD, true), ("not-it", false)] {
            let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
            let exchange = client_first(client.message(), &verifier, "c2VydmVy").unwrap();
            client.update(exchange.server_first().as_bytes()).unwrap();
            match exchange.client_final(client.message()) {
                Ok(server_final) => {
                    assert!(ok, "{password} was accepted");
                    client.finish(server_final.as_bytes()).unwrap();
                }
                Err(e) => assert!(!ok && e == ScramError::WrongProof, "{password}: {e}"),
            }
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let verifier = derive("pw", b"salt", ITERATIONS);
        assert_eq!(
            client_first(b"p=tls-server-end-point,,n=,r=x", &verifier, "s").err(),
            Some(ScramError::ChannelBinding)
        );
        for bad in [
            &b"n,,n=,"[..],
            b"garbage",
            b"n,,r=abc",
            b"n,,n=,r=a b",
            b"n,,n=,r=\x01",
        ] {
            assert!(client_first(bad, &verifier, "s").is_err(), "{bad:?}");
        }
        let exchange = client_first(b"n,,n=,r=abc", &verifier, "def").unwrap();
        assert!(exchange.client_final(b"c=biws,r=abcdef").is_err());
        assert!(exchange.client_final(b"c=biws,r=other,p=AAAA").is_err());
        assert!(exchange.client_final(b"c=biws,r=abcdef,p=!!!!").is_err());
        assert_eq!(
            exchange.client_final(b"c=biws,r=abcdef,p=AAAA"),
            Err(ScramError::WrongProof)
        );
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i: u8| i.wrapping_mul(37) | 0x80).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"n,,"), "biws");
        assert_eq!(base64_decode("abc"), None);
    }
}

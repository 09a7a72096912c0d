//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, sans IO:
//! the client's first message in, the server's first out, the client's final message checked
//! against the password, the server's signature out. The user name inside the exchange is
//! ignored (PostgreSQL takes it from the startup packet); channel binding is not offered.
//! Primitives come from `ring`, already in the build for TLS.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};
use thiserror::Error;

/// Iterations of the salted password, PostgreSQL's default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;

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

/// An exchange after the server's first message.
pub struct Exchange {
    /// What the client's final message must echo in `c=` (its GS2 header, base64).
    channel: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
    salted: [u8; 32],
}

/// Reads the client's first message and answers it with `server_nonce` and `salt`.
pub fn client_first(
    message: &[u8],
    password: &str,
    server_nonce: &str,
    salt: &[u8],
) -> Result<Exchange, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (gs2, bare) = match text.split_once(",,") {
        Some((flag @ ("n" | "y"), bare)) => (format!("{flag},,"), bare),
        Some((flag, _)) if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("GS2 header")),
    };
    let client_nonce = bare
        .split(',')
        .find_map(|attr| attr.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or(ScramError::Malformed("client nonce"))?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!("r={nonce},s={},i={ITERATIONS}", base64_encode(salt));
    let mut salted = [0u8; 32];
    let iterations = NonZeroU32::new(ITERATIONS).ok_or(ScramError::Malformed("iterations"))?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    Ok(Exchange {
        channel: base64_encode(gs2.as_bytes()),
        nonce,
        client_first_bare: bare.to_owned(),
        server_first,
        salted,
    })
}

impl Exchange {
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
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &self.salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        if proof.len() != signature.as_ref().len() {
            return Err(ScramError::WrongProof);
        }
        // The client's key is its proof XOR the signature; its hash must be the stored key.
        let recovered: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let hashed = digest::digest(&digest::SHA256, &recovered);
        if !crate::secret::constant_time_eq(hashed.as_ref(), stored_key.as_ref()) {
            return Err(ScramError::WrongProof);
        }
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
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

    /// The exchange of RFC 7677 section 3 (user "user", password "pencil").
    #[test]
    fn the_rfc_7677_example_verifies_and_signs() {
        let salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let exchange = client_first(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "pencil",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            &salt,
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

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            client_first(b"p=tls-server-end-point,,n=,r=x", "pw", "s", b"salt").err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(client_first(b"n,,n=,", "pw", "s", b"salt").is_err());
        assert!(client_first(b"garbage", "pw", "s", b"salt").is_err());
        let exchange = client_first(b"n,,n=,r=abc", "pw", "def", b"salt").unwrap();
        assert!(exchange.client_final(b"c=biws,r=abcdef").is_err());
        assert!(exchange.client_final(b"c=biws,r=other,p=AAAA").is_err());
        assert!(exchange.client_final(b"c=biws,r=abcdef,p=!!!!").is_err());
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

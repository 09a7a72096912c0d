//! The untagged packets a client may send first: SSLRequest, GSSENCRequest, CancelRequest and
//! StartupMessage (protocol 3.0, or 3.x minor versions that the upstream negotiates itself).

use thiserror::Error;

/// Postgres refuses startup packets larger than this (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_MAJOR_3: u32 = 3;
/// Protocol 3.0, what pgward asks for when it logs in to PostgreSQL itself.
pub const PROTOCOL_3_0: u32 = 196_608;

/// One decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupMessage),
}

/// The key of a CancelRequest: process id and secret (4 bytes in 3.0, up to 256 bytes in 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: Vec<u8>,
}

/// A StartupMessage: the protocol version and every parameter, in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub protocol: u32,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The user name (required by Postgres).
    pub fn user(&self) -> &str {
        self.param("user").unwrap_or("")
    }

    /// The database; Postgres defaults it to the user name.
    pub fn database(&self) -> &str {
        self.param("database").unwrap_or_else(|| self.user())
    }

    /// Encodes the message exactly as a client would send it.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(&self.protocol.to_be_bytes());
        for (k, v) in &self.params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Why a startup packet is unacceptable; the client gets 08P01 and the connection closes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet: {0}")]
    InvalidLength(i64),
    #[error("unsupported frontend protocol {}.{}: server supports 3.0 to 3.2", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocol(u32),
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Layout,
    #[error("startup packet parameters are not valid UTF-8")]
    Encoding,
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

/// Validates the 4-byte length prefix of a startup packet and returns the body length.
pub fn body_len(length_prefix: [u8; 4]) -> Result<usize, StartupError> {
    let len = i32::from_be_bytes(length_prefix) as i64;
    if !(8..=MAX_STARTUP_PACKET as i64).contains(&len) {
        return Err(StartupError::InvalidLength(len));
    }
    Ok(len as usize - 4)
}

/// Decodes a startup packet body (everything after the length prefix).
pub fn decode(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let Some((code, rest)) = body.split_first_chunk::<4>() else {
        return Err(StartupError::InvalidLength(body.len() as i64 + 4));
    };
    match u32::from_be_bytes(*code) {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let Some((pid, secret)) = rest.split_first_chunk::<4>() else {
                return Err(StartupError::Layout);
            };
            if secret.is_empty() || secret.len() > 256 {
                return Err(StartupError::Layout);
            }
            Ok(StartupPacket::Cancel(CancelKey {
                pid: u32::from_be_bytes(*pid),
                secret: secret.to_vec(),
            }))
        }
        protocol if protocol >> 16 == PROTOCOL_MAJOR_3 => decode_params(protocol, rest),
        protocol => Err(StartupError::UnsupportedProtocol(protocol)),
    }
}

fn decode_params(protocol: u32, mut rest: &[u8]) -> Result<StartupPacket, StartupError> {
    let mut params = Vec::new();
    loop {
        let Some((key, after_key)) = super::take_cstr(rest) else {
            return Err(StartupError::Layout);
        };
        if key.is_empty() {
            if !after_key.is_empty() {
                return Err(StartupError::Layout);
            }
            break;
        }
        let Some((value, after_value)) = super::take_cstr(after_key) else {
            return Err(StartupError::Layout);
        };
        let key = std::str::from_utf8(key).map_err(|_| StartupError::Encoding)?;
        let value = std::str::from_utf8(value).map_err(|_| StartupError::Encoding)?;
        params.push((key.to_owned(), value.to_owned()));
        rest = after_value;
    }
    let message = StartupMessage { protocol, params };
    if message.param("user").is_none_or(str::is_empty) {
        return Err(StartupError::NoUser);
    }
    Ok(StartupPacket::Startup(message))
}

/// Encodes a CancelRequest for `key`.
pub fn encode_cancel(key: &CancelKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.secret.len());
    out.extend_from_slice(&(12 + key.secret.len() as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&key.pid.to_be_bytes());
    out.extend_from_slice(&key.secret);
    out
}

/// The 8-byte SSLRequest a client (here: pgward toward its upstream) sends to ask for TLS.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_roundtrip_keeps_every_parameter_in_order() {
        let msg = StartupMessage {
            protocol: 196_608,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "shop".into()),
                ("application_name".into(), "checkout".into()),
                ("options".into(), "-c search_path=app".into()),
            ],
        };
        let bytes = msg.encode();
        let len = body_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode(&bytes[4..]), Ok(StartupPacket::Startup(msg)));
    }

    #[test]
    fn database_defaults_to_user() {
        let msg = StartupMessage {
            protocol: 196_608,
            params: vec![("user".into(), "bob".into())],
        };
        assert_eq!(msg.database(), "bob");
    }

    #[test]
    fn special_requests_are_recognised() {
        assert_eq!(
            decode(&encode_ssl_request()[4..]),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            decode(&80_877_104u32.to_be_bytes()),
            Ok(StartupPacket::GssEncRequest)
        );
        let key = CancelKey {
            pid: 42,
            secret: vec![1, 2, 3, 4],
        };
        assert_eq!(
            decode(&encode_cancel(&key)[4..]),
            Ok(StartupPacket::Cancel(key))
        );
    }

    #[test]
    fn bad_packets_are_errors_not_panics() {
        assert_eq!(body_len([0, 0, 0, 3]), Err(StartupError::InvalidLength(3)));
        assert_eq!(
            body_len([0, 1, 0, 0]),
            Err(StartupError::InvalidLength(65_536))
        );
        assert_eq!(
            body_len([0xff, 0xff, 0xff, 0xff]),
            Err(StartupError::InvalidLength(-1))
        );
        assert_eq!(
            decode(&[0, 2, 0, 0]),
            Err(StartupError::UnsupportedProtocol(131_072))
        );
        assert_eq!(decode(&[0, 3, 0, 0, b'u', 0]), Err(StartupError::Layout));
        assert_eq!(decode(&[0, 3, 0, 0, 0]), Err(StartupError::NoUser));
        assert_eq!(
            decode(&[0, 3, 0, 0, b'u', b's', b'e', b'r', 0, 0xff, 0, 0]),
            Err(StartupError::Encoding)
        );
        assert!(decode(&[1]).is_err());
    }
}

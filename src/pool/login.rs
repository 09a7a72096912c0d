//! pgward logging in to PostgreSQL itself, with configured credentials: the StartupMessage
//! (user, database, `[pool.startup_parameters]`), then whatever the server asks — trust,
//! cleartext, md5 or SCRAM-SHA-256 (the client side from `postgres-protocol`, the server's
//! final signature checked, so a server that does not know the password cannot pass) — then
//! ParameterStatus and BackendKeyData up to ReadyForQuery. Every message is read whole under
//! [`LOGIN_MAX_MESSAGE`], its buffer growing only as bytes arrive; the caller bounds the whole
//! login in time. Errors say which side failed: [`LoginError::side`].

use std::time::Duration;

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use thiserror::Error;

use super::conn::{Frames, PgConnection, ReadError, send};
use super::settings::Password;
use crate::protocol::backend::{self, auth};
use crate::protocol::build;
use crate::protocol::startup::{CancelKey, PROTOCOL_3_0, StartupMessage};
use crate::protocol::tag::backend as tag;
use crate::upstream::{Upstream, UpstreamError};

/// Largest message accepted during login: authentication requests, ParameterStatus, notices
/// and errors are all far smaller.
pub const LOGIN_MAX_MESSAGE: usize = 64 * 1024;
/// ParameterStatus values kept per connection (PostgreSQL 15 reports 14).
pub const MAX_PARAMETERS: usize = 256;

/// What one login says: as whom, to which database, with which extra parameters.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    pub user: String,
    pub database: String,
    pub parameters: Vec<(String, String)>,
    /// `None`: no password configured for the user (trust only).
    pub password: Option<Password>,
}

/// Which side a failed login is down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The network or the server's process: unreachable, reset, timed out.
    Network,
    /// The server refused (an ErrorResponse with a SQLSTATE), or did not prove the password.
    Server,
    /// pgward's own settings: no password configured, an unsupported method.
    Config,
}

/// Why a server connection could not be opened.
#[derive(Debug, Error)]
pub enum LoginError {
    #[error(transparent)]
    Connect(#[from] UpstreamError),
    #[error("connection to upstream {address} lost during login: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("login to upstream {address} did not finish within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error(
        "upstream refused the login of user {user:?} to database {database:?}: {message} (SQLSTATE {code})"
    )]
    Refused {
        user: String,
        database: String,
        /// The server's SQLSTATE, e.g. 28P01 for a wrong password.
        code: String,
        message: String,
    },
    #[error(
        "upstream asks a password for user {user:?} and none is configured in [[pool.credentials]]"
    )]
    NoPassword { user: String },
    #[error(
        "upstream asks for authentication method {code}, which pgward does not support (trust, cleartext, md5 and SCRAM-SHA-256 are)"
    )]
    UnsupportedMethod { code: i32 },
    #[error("upstream offers SASL without SCRAM-SHA-256")]
    NoScram,
    #[error("SCRAM-SHA-256 with upstream failed: {0}")]
    Scram(std::io::Error),
    #[error("upstream {address} broke the protocol during login: {message}")]
    Protocol { address: String, message: String },
}

impl LoginError {
    pub fn side(&self) -> Side {
        match self {
            LoginError::Connect(_) | LoginError::Io { .. } | LoginError::Timeout { .. } => {
                Side::Network
            }
            LoginError::Refused { .. } | LoginError::Scram(_) | LoginError::Protocol { .. } => {
                Side::Server
            }
            LoginError::NoPassword { .. }
            | LoginError::UnsupportedMethod { .. }
            | LoginError::NoScram => Side::Config,
        }
    }

    /// The SQLSTATE a client should see: the server's own for a refusal (28P01, 3D000, ...),
    /// 08006 when the server could not be reached, 08001 for a login pgward could not make.
    pub fn sqlstate(&self) -> &str {
        match self {
            LoginError::Refused { code, .. } => code,
            LoginError::Connect(_) | LoginError::Io { .. } | LoginError::Timeout { .. } => {
                crate::protocol::sqlstate::CONNECTION_FAILURE
            }
            _ => SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        }
    }
}

/// `sqlclient_unable_to_establish_sqlconnection`, what libpq-based clients report for a login
/// they could not complete.
const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";

/// Where the authentication exchange is.
enum Auth {
    /// Nothing asked yet, or a password sent and its answer awaited.
    Pending,
    /// A SCRAM exchange is under way; the server must still prove itself (SASLFinal).
    Scram(Box<ScramSha256>),
    /// The server has proven itself (SASLFinal verified), AuthenticationOk is next.
    ScramVerified,
    /// AuthenticationOk received.
    Done,
}

/// Opens a connection (TCP, TLS as `[upstream]` says) and logs in as `spec` says. Not bounded
/// in time here: the pool wraps it in `server_login_timeout`.
pub async fn login(upstream: &Upstream, spec: &LoginSpec) -> Result<PgConnection, LoginError> {
    let address = upstream.address().to_owned();
    let mut stream = upstream.connect().await?;
    let io = |source| LoginError::Io {
        address: address.clone(),
        source,
    };
    send(&mut stream, &startup_message(spec))
        .await
        .map_err(io)?;
    let mut frames = Frames::new(LOGIN_MAX_MESSAGE);
    let mut state = Auth::Pending;
    let mut key = None;
    let mut parameters = Vec::new();
    loop {
        let kind = frames.read(&mut stream).await.map_err(|e| match e {
            ReadError::Io(source) => io(source),
            ReadError::Frame(message) => LoginError::Protocol {
                address: address.clone(),
                message,
            },
        })?;
        let body = frames.body();
        match kind {
            tag::AUTHENTICATION => {
                let mut out = Vec::new();
                state = authenticate(state, body, spec, &address, &mut out)?;
                if !out.is_empty() {
                    send(&mut stream, &out).await.map_err(io)?;
                }
            }
            tag::BACKEND_KEY_DATA => {
                let (pid, secret) = backend::backend_key(body)
                    .ok_or_else(|| protocol(&address, "BackendKeyData without a pid and secret"))?;
                key = Some(CancelKey {
                    pid,
                    secret: secret.to_vec(),
                });
            }
            tag::PARAMETER_STATUS => {
                if let Some((name, value)) = backend::parameter_status(body) {
                    set_parameter(&mut parameters, name, value);
                }
            }
            tag::ERROR_RESPONSE => return Err(refused(spec, body)),
            // Only about protocol options pgward never asks for; notices are not errors.
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            tag::READY_FOR_QUERY => break,
            other => {
                let message = format!("unexpected message type {other} during login");
                return Err(protocol(&address, &message));
            }
        }
    }
    if !matches!(state, Auth::Done) {
        return Err(protocol(&address, "ReadyForQuery before AuthenticationOk"));
    }
    let key = key.ok_or_else(|| protocol(&address, "no BackendKeyData before ReadyForQuery"))?;
    Ok(PgConnection::new(stream, key, parameters))
}

/// The StartupMessage of `spec`: user, database, then the configured parameters.
fn startup_message(spec: &LoginSpec) -> Vec<u8> {
    let mut params = vec![
        ("user".to_owned(), spec.user.clone()),
        ("database".to_owned(), spec.database.clone()),
    ];
    params.extend(spec.parameters.iter().cloned());
    StartupMessage {
        protocol: PROTOCOL_3_0,
        params,
    }
    .encode()
}

fn protocol(address: &str, message: &str) -> LoginError {
    LoginError::Protocol {
        address: address.to_owned(),
        message: message.to_owned(),
    }
}

fn refused(spec: &LoginSpec, body: &[u8]) -> LoginError {
    let fields = backend::error_fields(body);
    let code = fields
        .code
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_else(|| crate::protocol::sqlstate::INTERNAL_ERROR.to_owned());
    let message = backend::error_message(body)
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    LoginError::Refused {
        user: spec.user.clone(),
        database: spec.database.clone(),
        code,
        message,
    }
}

/// Records one ParameterStatus, replacing an earlier value of the same name; at most
/// [`MAX_PARAMETERS`] names are kept.
pub(super) fn set_parameter(parameters: &mut Vec<(String, String)>, name: &[u8], value: &[u8]) {
    let name = String::from_utf8_lossy(name);
    let value = String::from_utf8_lossy(value).into_owned();
    if let Some(slot) = parameters.iter_mut().find(|(n, _)| *n == name) {
        slot.1 = value;
    } else if parameters.len() < MAX_PARAMETERS {
        parameters.push((name.into_owned(), value));
    }
}

/// One Authentication request: appends the answer to `out` and returns the next state.
fn authenticate(
    state: Auth,
    body: &[u8],
    spec: &LoginSpec,
    address: &str,
    out: &mut Vec<u8>,
) -> Result<Auth, LoginError> {
    let code = backend::auth_code(body)
        .ok_or_else(|| protocol(address, "Authentication request without a code"))?;
    let data = body.get(4..).unwrap_or_default();
    let password = || {
        spec.password
            .as_ref()
            .ok_or_else(|| LoginError::NoPassword {
                user: spec.user.clone(),
            })
    };
    match (code, state) {
        (auth::OK, Auth::Pending | Auth::ScramVerified) => Ok(Auth::Done),
        (auth::OK, Auth::Scram(_)) => Err(LoginError::Scram(bad(
            "the server accepted the login without proving it knows the password",
        ))),
        (auth::CLEARTEXT_PASSWORD, Auth::Pending) => {
            build::password_message(out, password()?.as_bytes());
            Ok(Auth::Pending)
        }
        (auth::MD5_PASSWORD, Auth::Pending) => {
            let salt: [u8; 4] = data
                .try_into()
                .map_err(|_| protocol(address, "md5 request without a 4-byte salt"))?;
            let hash = md5_hash(spec.user.as_bytes(), password()?.as_bytes(), salt);
            build::password_message(out, hash.as_bytes());
            Ok(Auth::Pending)
        }
        (auth::SASL, Auth::Pending) => {
            let offered = backend::sasl_mechanisms(body);
            if !offered.contains(&SCRAM_SHA_256.as_bytes()) {
                return Err(LoginError::NoScram);
            }
            // "n": pgward does not bind to the TLS channel, so a server that offers
            // SCRAM-SHA-256-PLUS does not take this for a downgrade attack (as "y" would be).
            let scram = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
            build::sasl_initial_response(out, SCRAM_SHA_256, scram.message())
                .ok_or_else(|| LoginError::Scram(bad("client-first message too long")))?;
            Ok(Auth::Scram(Box::new(scram)))
        }
        (auth::SASL_CONTINUE, Auth::Scram(mut scram)) => {
            scram.update(data).map_err(LoginError::Scram)?;
            build::sasl_response(out, scram.message());
            Ok(Auth::Scram(scram))
        }
        (auth::SASL_FINAL, Auth::Scram(mut scram)) => {
            scram.finish(data).map_err(LoginError::Scram)?;
            Ok(Auth::ScramVerified)
        }
        (auth::SASL_CONTINUE | auth::SASL_FINAL, _) => {
            Err(LoginError::Scram(bad("SASL message outside an exchange")))
        }
        (code, _) => Err(LoginError::UnsupportedMethod { code }),
    }
}

fn bad(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(password: Option<&str>) -> LoginSpec {
        LoginSpec {
            user: "app".into(),
            database: "shop".into(),
            parameters: Vec::new(),
            password: password.map(Password::new),
        }
    }

    fn request(code: i32, data: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        body
    }

    #[test]
    fn md5_and_cleartext_answers() {
        let mut out = Vec::new();
        let state = authenticate(
            Auth::Pending,
            &request(auth::MD5_PASSWORD, &[1, 2, 3, 4]),
            &spec(Some("pw")),
            "db:5432",
            &mut out,
        )
        .unwrap();
        assert!(matches!(state, Auth::Pending));
        let expected = md5_hash(b"app", b"pw", [1, 2, 3, 4]);
        assert_eq!(&out[5..out.len() - 1], expected.as_bytes());
        out.clear();
        authenticate(
            Auth::Pending,
            &request(auth::CLEARTEXT_PASSWORD, &[]),
            &spec(Some("pw")),
            "db:5432",
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"p\0\0\0\x07pw\0");
    }

    #[test]
    fn a_password_request_without_a_password_is_a_config_error() {
        let e = authenticate(
            Auth::Pending,
            &request(auth::MD5_PASSWORD, &[1, 2, 3, 4]),
            &spec(None),
            "db:5432",
            &mut Vec::new(),
        )
        .err()
        .unwrap();
        assert!(matches!(e, LoginError::NoPassword { .. }));
        assert_eq!(e.side(), Side::Config);
    }

    #[test]
    fn scram_must_end_with_the_servers_proof() {
        let mut out = Vec::new();
        let mut sasl = request(auth::SASL, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let state = authenticate(Auth::Pending, &sasl, &spec(Some("pw")), "db", &mut out).unwrap();
        assert!(matches!(state, Auth::Scram(_)));
        assert!(out.windows(13).any(|w| w == b"SCRAM-SHA-256"));
        // AuthenticationOk before SASLFinal: the server never proved itself.
        let e = authenticate(
            state,
            &request(auth::OK, &[]),
            &spec(Some("pw")),
            "db",
            &mut out,
        )
        .err()
        .unwrap();
        assert!(matches!(e, LoginError::Scram(_)), "{e}");
        sasl = request(auth::SASL, b"SCRAM-SHA-256-PLUS\0\0");
        let e = authenticate(Auth::Pending, &sasl, &spec(Some("pw")), "db", &mut out)
            .err()
            .unwrap();
        assert!(matches!(e, LoginError::NoScram));
        let e = authenticate(Auth::Pending, &request(7, &[]), &spec(None), "db", &mut out)
            .err()
            .unwrap();
        assert!(matches!(e, LoginError::UnsupportedMethod { code: 7 }));
    }

    #[test]
    fn parameters_replace_and_stay_bounded() {
        let mut p = Vec::new();
        set_parameter(&mut p, b"TimeZone", b"UTC");
        set_parameter(&mut p, b"TimeZone", b"CET");
        assert_eq!(p, vec![("TimeZone".to_owned(), "CET".to_owned())]);
        for i in 0..1000 {
            set_parameter(&mut p, format!("p{i}").as_bytes(), b"v");
        }
        assert_eq!(p.len(), MAX_PARAMETERS);
    }
}

//! One client's login against one secret (or none), over the client's socket: the challenge
//! the secret allows (SCRAM-SHA-256 for a verifier, md5 for an md5 hash, the configured
//! [`Method`] for plaintext), the client's answers read and checked, AuthenticationOk on
//! success. A user pgward does not know goes through the same exchange against a made-up secret
//! (salt stable per user, as a real verifier's is) and fails the same way as a wrong password,
//! so the answer never tells which users exist. A failed login waits `failed_login_delay`
//! before its FATAL error, so guessing online is slow. A plaintext secret's SCRAM keys are
//! derived at the user's first login and kept while the password stays the same ([`Policy`]).

use std::borrow::Cow;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::AuthError;
use super::md5;
use super::policy::{Policy, random};
use super::scram::{self, base64_encode};
use super::secret::{Md5Hash, ScramVerifier, Secret};
use super::settings::Method;
use crate::protocol::backend::auth as code;
use crate::protocol::build::{self, Report};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::frontend::{password_message, sasl_initial_response};
use crate::protocol::sqlstate;
use crate::protocol::tag::frontend as tag;

const MECHANISM: &[u8] = b"SCRAM-SHA-256";
/// Largest authentication message a client may send: PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`.
const MAX_MESSAGE: usize = 65_535;

/// What the client is challenged with, and against what.
enum Plan<'a> {
    Scram(Cow<'a, ScramVerifier>),
    Md5(Cow<'a, Md5Hash>),
}

fn plan<'a>(user: &str, secret: Option<&'a Secret>, policy: &Policy) -> Plan<'a> {
    match (secret, policy.method()) {
        (Some(Secret::Scram(verifier)), _) => Plan::Scram(Cow::Borrowed(verifier)),
        (Some(Secret::Md5(hash)), _) => Plan::Md5(Cow::Borrowed(hash)),
        (Some(Secret::Plain(password)), Method::ScramSha256) => Plan::Scram(Cow::Owned(
            policy
                .plaintext_verifier(user, &password.0)
                .verifier
                .clone(),
        )),
        (Some(Secret::Plain(password)), Method::Md5) => {
            Plan::Md5(Cow::Owned(md5::hash(&password.0, user)))
        }
        (None, Method::ScramSha256) => Plan::Scram(Cow::Owned(policy.mock_verifier(user))),
        (None, Method::Md5) => Plan::Md5(Cow::Owned(policy.mock_md5(user))),
    }
}

/// Logs `user` in against `secret` (`None`: a user pgward does not know, who fails as a wrong
/// password does). The exchange must end by `deadline`. On success AuthenticationOk has been
/// sent; on failure the client got its FATAL error (after the failed-login delay) and the
/// caller only closes the connection.
pub async fn login<S>(
    io: &mut S,
    user: &str,
    secret: Option<&Secret>,
    policy: &Policy,
    deadline: Instant,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let known = secret.is_some();
    let exchange = async {
        match plan(user, secret, policy) {
            Plan::Scram(verifier) => scram_exchange(io, &verifier, known).await,
            Plan::Md5(hash) => md5_exchange(io, &hash, known).await,
        }
    };
    let outcome = match tokio::time::timeout_at(deadline, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(AuthError::Timeout),
    };
    finish(io, user, outcome, policy).await
}

/// Reports a login's outcome to the client: nothing more on success; after a failure the
/// delay, then the FATAL error PostgreSQL would send.
pub(super) async fn finish<S>(
    io: &mut S,
    user: &str,
    outcome: Result<(), AuthError>,
    policy: &Policy,
) -> Result<(), AuthError>
where
    S: AsyncWrite + Unpin,
{
    let error = match outcome {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    let (code, message) = match &error {
        AuthError::ClientLeft | AuthError::Io(_) => return Err(error),
        AuthError::Failed { known } => {
            note_failure(policy, user, *known);
            tokio::time::sleep(policy.failed_login_delay()).await;
            let message = format!("password authentication failed for user \"{user}\"");
            (sqlstate::INVALID_PASSWORD, message)
        }
        AuthError::Protocol(message) => {
            tracing::info!(error = %message, "client authentication: protocol violation");
            tokio::time::sleep(policy.failed_login_delay()).await;
            (sqlstate::PROTOCOL_VIOLATION, message.clone())
        }
        AuthError::Timeout => {
            let message = "canceling authentication due to timeout (pgward auth_timeout)";
            (sqlstate::QUERY_CANCELED, message.to_owned())
        }
        AuthError::Lookup(e) => {
            tracing::warn!(error = %e, "client authentication: cannot look the user up");
            let message = format!("pgward could not look up the password of user \"{user}\"");
            (sqlstate::CONNECTION_FAILURE, message)
        }
        AuthError::Random(_) => {
            tracing::error!(error = %error, "client authentication");
            (sqlstate::INTERNAL_ERROR, error.to_string())
        }
    };
    let mut out = Vec::new();
    Report::fatal(code, &message).write_error(&mut out);
    let _ = io.write_all(&out).await;
    let _ = io.shutdown().await;
    Err(error)
}

/// The first failed login of a flood is logged with its user; the rest are counted.
fn note_failure(policy: &Policy, user: &str, known: bool) {
    let first = policy.first_failure();
    if first {
        let reason = if known {
            "wrong password"
        } else {
            "no such user"
        };
        tracing::warn!(user, reason, "password authentication failed");
    }
}

async fn scram_exchange<S>(
    io: &mut S,
    verifier: &ScramVerifier,
    known: bool,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    build::auth_sasl(&mut out, &[MECHANISM]);
    send(io, &mut out).await?;
    let body = read_response(io, "SASL").await?;
    let (mechanism, first) = sasl_initial_response(&body)
        .ok_or_else(|| AuthError::Protocol("malformed SASLInitialResponse message".into()))?;
    if mechanism != MECHANISM {
        let message = "client selected an invalid SASL authentication mechanism";
        return Err(AuthError::Protocol(message.into()));
    }
    let nonce = base64_encode(&random::<18>()?);
    let exchange =
        scram::client_first(first, verifier, &nonce).map_err(|e| scram_error(e, known))?;
    build::authentication(
        &mut out,
        code::SASL_CONTINUE,
        exchange.server_first().as_bytes(),
    );
    send(io, &mut out).await?;
    let body = read_response(io, "SASL").await?;
    let server_final = exchange
        .client_final(&body)
        .map_err(|e| scram_error(e, known))?;
    build::authentication(&mut out, code::SASL_FINAL, server_final.as_bytes());
    build::authentication(&mut out, code::OK, &[]);
    send(io, &mut out).await
}

fn scram_error(error: scram::ScramError, known: bool) -> AuthError {
    match error {
        scram::ScramError::WrongProof => AuthError::Failed { known },
        other => AuthError::Protocol(other.to_string()),
    }
}

async fn md5_exchange<S>(io: &mut S, hash: &Md5Hash, known: bool) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let salt = random::<4>()?;
    let mut out = Vec::new();
    build::authentication(&mut out, code::MD5_PASSWORD, &salt);
    send(io, &mut out).await?;
    let body = read_response(io, "password").await?;
    let response = password_message(&body)
        .ok_or_else(|| AuthError::Protocol("invalid password packet size".into()))?;
    if !md5::verify(hash, salt, response) {
        return Err(AuthError::Failed { known });
    }
    build::authentication(&mut out, code::OK, &[]);
    send(io, &mut out).await
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, out: &mut Vec<u8>) -> Result<(), AuthError> {
    io.write_all(out).await.map_err(AuthError::Io)?;
    out.clear();
    io.flush().await.map_err(AuthError::Io)
}

/// The body of the client's next PasswordMessage / SASL response ('p').
async fn read_response<S>(io: &mut S, expected: &str) -> Result<Vec<u8>, AuthError>
where
    S: AsyncRead + Unpin,
{
    let mut head = [0u8; HEADER_LEN];
    if io.read_exact(&mut head).await.is_err() {
        return Err(AuthError::ClientLeft);
    }
    let header = match frame::parse_header(&head, MAX_MESSAGE) {
        Ok(Some(header)) => header,
        Ok(None) => return Err(AuthError::ClientLeft),
        Err(e) => return Err(AuthError::Protocol(e.to_string())),
    };
    if header.tag == tag::TERMINATE {
        return Err(AuthError::ClientLeft);
    }
    if header.tag != tag::PASSWORD {
        let message = format!(
            "expected {expected} response, got message type {}",
            header.tag
        );
        return Err(AuthError::Protocol(message));
    }
    // Read as the bytes arrive: the length field alone allocates nothing.
    let mut body = Vec::new();
    let wanted = u64::try_from(header.body_len).unwrap_or(u64::MAX);
    let read = (&mut *io).take(wanted).read_to_end(&mut body).await;
    match read {
        Ok(n) if n == header.body_len => Ok(body),
        _ => Err(AuthError::ClientLeft),
    }
}

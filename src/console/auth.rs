//! Logging into the console: refused with 28000 while `[console]` is off; otherwise a
//! SCRAM-SHA-256 exchange against the configured password, so the password never crosses the
//! wire. Whether the user is an admin is checked only after the proof, and every failure reads
//! the same, so the console does not tell which user names exist.

use super::Console;
use super::scram::{self, Exchange, base64_encode};
use super::session::{Messages, fail};
use crate::protocol::build;
use crate::protocol::frontend::sasl_initial_response;
use crate::protocol::sqlstate;
use crate::protocol::tag::frontend as tag;

const MECHANISM: &[u8] = b"SCRAM-SHA-256";
/// AuthenticationSASLContinue and AuthenticationSASLFinal.
const SASL_CONTINUE: i32 = 11;
const SASL_FINAL: i32 = 12;
const AUTH_OK: i32 = 0;

/// Logs `user` in; true once AuthenticationOk is queued, false after a FATAL error was sent.
pub(super) async fn login(console: &Console, io: &mut Messages, user: &str) -> bool {
    let Some(password) = console.password.as_deref() else {
        tracing::info!("console login refused: the console is off");
        let message =
            "the pgward admin console is off: set [console] users and password in pgward.toml";
        fail(&mut io.client, sqlstate::INVALID_AUTHORIZATION, message).await;
        return false;
    };
    match exchange(io, password).await {
        Ok(Some(server_final)) if console.is_admin(user) => {
            build::authentication(io.out(), SASL_FINAL, server_final.as_bytes());
            build::authentication(io.out(), AUTH_OK, &[]);
            true
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "console SCRAM exchange failed");
            }
            tracing::warn!("console login failed");
            let message = format!("password authentication failed for user \"{user}\"");
            fail(&mut io.client, sqlstate::INVALID_PASSWORD, &message).await;
            false
        }
    }
}

/// Runs the SCRAM exchange; `Ok(Some(server_final))` when the proof matched, `Ok(None)` when
/// the client left, `Err` on a wrong or malformed answer.
async fn exchange(io: &mut Messages, password: &str) -> Result<Option<String>, String> {
    build::auth_sasl(io.out(), &[MECHANISM]);
    io.flush().await.map_err(|e| e.to_string())?;
    let Some(body) = read_password_message(io).await? else {
        return Ok(None);
    };
    let (mechanism, first) = sasl_initial_response(&body).ok_or("malformed SASLInitialResponse")?;
    if mechanism != MECHANISM {
        return Err("the client chose another SASL mechanism".into());
    }
    let exchange: Exchange = scram::client_first(first, password, &nonce()?, &random::<16>()?)
        .map_err(|e| e.to_string())?;
    build::authentication(io.out(), SASL_CONTINUE, exchange.server_first().as_bytes());
    io.flush().await.map_err(|e| e.to_string())?;
    let Some(body) = read_password_message(io).await? else {
        return Ok(None);
    };
    exchange
        .client_final(&body)
        .map(Some)
        .map_err(|e| e.to_string())
}

async fn read_password_message(io: &mut Messages) -> Result<Option<Vec<u8>>, String> {
    match io.read().await? {
        Some((tag::PASSWORD, body)) => Ok(Some(body)),
        Some(_) => Err("expected a SASL response".into()),
        None => Ok(None),
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The server's part of the SCRAM nonce: 18 random bytes, base64 (printable, no comma).
fn nonce() -> Result<String, String> {
    Ok(base64_encode(&random::<18>()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonces_differ_and_hold_no_comma() {
        let (a, b) = (super::nonce().unwrap(), super::nonce().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(!a.contains(','));
    }
}

//! Logging into the console: refused with 28000 while `[console]` is off; otherwise the shared
//! client-authentication exchange (`crate::auth::login`) against the configured password, by
//! SCRAM-SHA-256, so the password never crosses the wire. A user who is not an admin goes
//! through the same exchange against no secret, so every failure reads the same (28P01, after
//! `[auth] failed_login_delay`) and the console does not tell which user names exist.

use tokio::time::Instant;

use super::Console;
use super::session::{Messages, fail};
use crate::auth::{self, AuthError};
use crate::protocol::sqlstate;

/// Logs `user` in by `deadline`; true once AuthenticationOk is sent, false after a FATAL error
/// was sent (or the client left).
pub(super) async fn login(
    console: &Console,
    io: &mut Messages,
    user: &str,
    deadline: Instant,
) -> bool {
    let Some(password) = &console.password else {
        tracing::info!("console login refused: the console is off");
        let message =
            "the pgward admin console is off: set [console] users and password in pgward.toml";
        fail(&mut io.client, sqlstate::INVALID_AUTHORIZATION, message).await;
        return false;
    };
    let secret = console.is_admin(user).then_some(password);
    match auth::login(&mut io.client, user, secret, &console.login, deadline).await {
        Ok(()) => true,
        Err(AuthError::ClientLeft | AuthError::Io(_)) => false,
        Err(e) => {
            tracing::warn!(error = %e, "console login failed");
            false
        }
    }
}

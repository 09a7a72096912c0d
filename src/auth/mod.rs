//! Client authentication done by pgward itself, for the sessions it does not relay to one
//! PostgreSQL backend of their own (transaction pooling) and for the admin console. Secrets
//! come from a users file in PgBouncer's `auth_file` format ([`users_file`]) and/or from
//! PostgreSQL through `auth_query` ([`query`]); the exchange ([`exchange`]) offers SCRAM-SHA-256
//! for a SCRAM verifier, md5 for an md5 hash, and `password_encryption`'s method for plaintext,
//! and fails an unknown user exactly as a wrong password (28P01, PostgreSQL's wording, after
//! `failed_login_delay`). The session calls [`authenticate`] with its client stream; the
//! console calls [`login`] with its one password.

pub mod exchange;
pub mod md5;
pub mod policy;
pub mod query;
pub mod scram;
pub mod secret;
pub mod settings;
#[cfg(test)]
mod tests;
pub mod users_file;
#[cfg(test)]
mod vectors;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

pub use exchange::login;
pub use policy::Policy;
pub use query::{AuthQuery, LookupError};
pub use secret::Secret;
pub use settings::{AuthSettings, Method, SettingsError};
pub use users_file::{UsersFileError, UsersTable};

use crate::eventlog::EventLog;
use crate::upstream::Upstream;

/// Why a login did not succeed. Every variant but `ClientLeft` and `Io` has already been
/// answered to the client with a FATAL error.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Wrong password, or (`known: false`) a user pgward has no secret for: the client reads
    /// the same 28P01 for both.
    #[error("password authentication failed")]
    Failed { known: bool },
    #[error("authentication protocol violation: {0}")]
    Protocol(String),
    #[error("the client did not finish authenticating within auth_timeout")]
    Timeout,
    #[error("the client left during authentication")]
    ClientLeft,
    #[error("writing to the client: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("no random numbers for the exchange: {0}")]
    Random(String),
}

/// Why an [`Authenticator`] cannot be built or reloaded.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    UsersFile(#[from] UsersFileError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Everything a session needs to authenticate its client: the secrets' sources and the policy.
pub struct Authenticator {
    file: Option<UsersFile>,
    query: Option<AuthQuery>,
    policy: Policy,
}

struct UsersFile {
    path: PathBuf,
    table: ArcSwap<UsersTable>,
}

impl Authenticator {
    /// Loads the users file and prepares `auth_query`; `None` when `[auth]` names neither.
    pub fn from_settings(
        settings: &AuthSettings,
        upstream: Arc<Upstream>,
        events: Option<Arc<EventLog>>,
    ) -> Result<Option<Authenticator>, SetupError> {
        if !settings.is_configured() {
            return Ok(None);
        }
        settings.validate()?;
        let file = match &settings.auth_file {
            Some(path) => Some(UsersFile {
                path: path.clone(),
                table: ArcSwap::from_pointee(UsersTable::load(path)?),
            }),
            None => None,
        };
        Ok(Some(Authenticator {
            file,
            query: AuthQuery::new(settings, upstream)?,
            policy: Policy::new(
                settings.password_encryption,
                settings.failed_login_delay.0,
                events,
            )?,
        }))
    }

    /// Reads the users file again and swaps the new table in whole; on error the table in
    /// force stays. Returns the number of users loaded (0 without a users file).
    pub fn reload_users_file(&self) -> Result<usize, UsersFileError> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let table = UsersTable::load(&file.path)?;
        let users = table.len();
        file.table.store(Arc::new(table));
        Ok(users)
    }

    /// The secret of `user`: the users file first, then `auth_query`.
    pub async fn lookup(&self, user: &str) -> Result<Option<Arc<Secret>>, LookupError> {
        if let Some(secret) = self.file.as_ref().and_then(|f| f.table.load().get(user)) {
            return Ok(Some(secret));
        }
        match &self.query {
            Some(query) => query.lookup(user).await,
            None => Ok(None),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Authenticates the client on `io` as `user` (the StartupMessage's `user`), by `deadline`
/// (the session's `auth_timeout`). `Ok`: AuthenticationOk was sent and the session goes on
/// with its ParameterStatus, BackendKeyData and ReadyForQuery. `Err`: the client was answered
/// (FATAL, after the failed-login delay where one applies) or left; close the connection.
pub async fn authenticate<S>(
    io: &mut S,
    user: &str,
    authenticator: &Authenticator,
    deadline: Instant,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let looked_up = match tokio::time::timeout_at(deadline, authenticator.lookup(user)).await {
        Ok(found) => found.map_err(AuthError::from),
        Err(_) => Err(AuthError::Timeout),
    };
    match looked_up {
        Ok(secret) => login(io, user, secret.as_deref(), &authenticator.policy, deadline).await,
        Err(e) => exchange::finish(io, user, Err(e), &authenticator.policy).await,
    }
}

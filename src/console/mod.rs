//! The admin console: a client that connects to pgward's own listener with the database name
//! [`DATABASE`] is answered by pgward itself, as PgBouncer answers its `pgbouncer` database,
//! and never reaches PostgreSQL. It is off unless `[console]` names admin users and a password;
//! they log in with SCRAM-SHA-256 through the shared client authentication (`crate::auth`).
//! Commands ([`commands`]) arrive as simple Query messages and are answered with ordinary
//! RowDescription / DataRow / CommandComplete in text format, so psql shows them as tables.

mod auth;
mod commands;
mod session;
mod table;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::secret::Plaintext;
use crate::auth::{Policy, Secret};
use crate::cache::ResultCache;
use crate::pool::Pools;
use crate::reload::Rules;
use crate::sessions::Sessions;
use crate::stats::Stats;

pub use session::serve;
pub use table::settings;

/// The virtual database name that opens the console.
pub const DATABASE: &str = "pgward";

/// Most admin users `[console] users` may list.
const MAX_USERS: usize = 100;

/// `[console]` in pgward.toml.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// User names allowed into the console; empty (the default) leaves it off.
    pub users: Vec<String>,
    /// Their password.
    pub password: Option<String>,
    /// A file holding the password (trailing newline ignored), e.g. a mounted Secret.
    pub password_file: Option<PathBuf>,
}

/// A `[console]` setting that cannot work.
#[derive(Debug, Error)]
#[error("{key}: {message}")]
pub struct ConsoleError {
    pub key: &'static str,
    pub message: String,
}

impl ConsoleSettings {
    /// The password in force (`None`: the console is off), or why the settings are unusable.
    pub fn resolve_password(&self) -> Result<Option<String>, ConsoleError> {
        let fail = |key, message: &str| {
            Err(ConsoleError {
                key,
                message: message.into(),
            })
        };
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return fail(
                    "console.password",
                    "set password or password_file, not both",
                );
            }
            (Some(password), None) => Some(password.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text.trim_end_matches(['\r', '\n']).to_owned()),
                Err(e) => {
                    let message = format!("cannot read {}: {e}", path.display());
                    return fail("console.password_file", &message);
                }
            },
            (None, None) => None,
        };
        if self.users.len() > MAX_USERS {
            return fail("console.users", "at most 100 admin users");
        }
        if self.users.iter().any(|u| u.is_empty() || u.len() > 63) {
            return fail("console.users", "each user name needs 1..=63 bytes");
        }
        match (self.users.is_empty(), &password) {
            (true, None) => Ok(None),
            (true, Some(_)) => fail("console.users", "a console password needs users"),
            (false, None) => fail("console.password", "console users need a password"),
            (false, Some(p)) if p.len() < 8 => {
                fail("console.password", "use a password of at least 8 bytes")
            }
            (false, Some(p)) => Ok(Some(p.clone())),
        }
    }
}

/// What the console uses of the process.
pub struct Console {
    users: Vec<String>,
    /// `None`: the console is off and every login is refused.
    password: Option<Secret>,
    /// How logins go: SCRAM for the password, the failed-login delay.
    login: Policy,
    pub stats: Arc<Stats>,
    pub rules: Arc<Rules>,
    pub cache: Arc<ResultCache>,
    pub sessions: Arc<Sessions>,
    /// `SHOW CONFIG`: every setting as a dotted key and its value, secrets masked
    /// ([`settings`]).
    pub config: Vec<(String, String)>,
    /// `SHOW POOLS`; `None` in session mode.
    pub pools: Option<Arc<Pools>>,
}

/// The handles [`Console::new`] takes besides its settings.
pub struct Parts {
    /// `SHOW POOLS`; `None` in session mode.
    pub pools: Option<Arc<Pools>>,
    pub stats: Arc<Stats>,
    pub rules: Arc<Rules>,
    pub cache: Arc<ResultCache>,
    pub sessions: Arc<Sessions>,
    pub config: Vec<(String, String)>,
    /// `[auth]`'s login policy (its failed-login delay applies to the console too).
    pub login: Policy,
}

impl Console {
    pub fn new(settings: &ConsoleSettings, parts: Parts) -> Result<Console, ConsoleError> {
        Ok(Console {
            users: settings.users.clone(),
            password: settings
                .resolve_password()?
                .map(|p| Secret::Plain(Plaintext(p))),
            login: parts.login,
            stats: parts.stats,
            rules: parts.rules,
            cache: parts.cache,
            sessions: parts.sessions,
            config: parts.config,
            pools: parts.pools,
        })
    }

    fn is_admin(&self, user: &str) -> bool {
        self.users.iter().any(|u| u == user)
    }
}

#[cfg(test)]
mod tests {
    use super::ConsoleSettings;

    fn settings(users: &[&str], password: Option<&str>) -> ConsoleSettings {
        ConsoleSettings {
            users: users.iter().map(|u| u.to_string()).collect(),
            password: password.map(str::to_owned),
            password_file: None,
        }
    }

    #[test]
    fn the_console_is_off_by_default_and_needs_users_with_a_password() {
        assert_eq!(ConsoleSettings::default().resolve_password().unwrap(), None);
        let on = settings(&["ops"], Some("a-long-secret"));
        assert_eq!(
            on.resolve_password().unwrap().as_deref(),
            Some("a-long-secret")
        );
        for (bad, key) in [
            (settings(&["ops"], None), "console.password"),
            (settings(&[], Some("a-long-secret")), "console.users"),
            (settings(&["ops"], Some("short")), "console.password"),
            (settings(&[""], Some("a-long-secret")), "console.users"),
        ] {
            assert_eq!(bad.resolve_password().unwrap_err().key, key);
        }
    }
}

//! `[auth]` in pgward.toml: where pgward finds the secrets of the clients it authenticates
//! itself (a users file, `auth_query`, or both: the file first), how the auth user logs in
//! (its password from a file or an environment variable, never from pgward.toml), how
//! plaintext secrets are challenged, and the delay after a failed login. Every number has a
//! range, checked by [`AuthSettings::validate`] (so by `Config::validate` and `pgward check`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::users_file::UsersTable;
use crate::units::HumanDuration;

/// The range of `failed_login_delay`: long enough to slow guessing, short enough that a typo
/// costs a person little (a delayed connection holds its client slot meanwhile).
pub const FAILED_LOGIN_DELAY_RANGE: (Duration, Duration) =
    (Duration::ZERO, Duration::from_secs(10));
/// The range of `auth_query_timeout`.
pub const QUERY_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));
/// The range of `auth_query_cache_ttl` (0s: no cache).
pub const CACHE_TTL_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3600));

/// `[auth]` in pgward.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// A users file in PgBouncer's `auth_file` format (src/auth/users_file.rs).
    pub auth_file: Option<PathBuf>,
    /// A query returning (name, secret) for the user in `$1`, e.g. `SELECT usename, passwd
    /// FROM pg_shadow WHERE usename = $1`; asked for users not in `auth_file`.
    pub auth_query: Option<String>,
    /// The PostgreSQL role `auth_query` runs as.
    pub auth_user: Option<String>,
    /// A file holding the auth user's password (trailing newline ignored).
    pub auth_password_file: Option<PathBuf>,
    /// An environment variable holding the auth user's password.
    pub auth_password_env: Option<String>,
    /// The database `auth_query` connects to.
    pub auth_dbname: String,
    /// How a plaintext secret, and a user pgward does not know, is challenged.
    pub password_encryption: Method,
    /// How long a failed login waits before its error is sent (0s..10s).
    pub failed_login_delay: HumanDuration,
    /// How long one `auth_query` lookup (connect, log in, query) may take (100ms..1m).
    pub auth_query_timeout: HumanDuration,
    /// How long an `auth_query` answer (a secret, or "no such user") is reused (0s..1h).
    pub auth_query_cache_ttl: HumanDuration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            auth_file: None,
            auth_query: None,
            auth_user: None,
            auth_password_file: None,
            auth_password_env: None,
            auth_dbname: "postgres".into(),
            password_encryption: Method::ScramSha256,
            failed_login_delay: HumanDuration(Duration::from_millis(500)),
            auth_query_timeout: HumanDuration(Duration::from_secs(5)),
            auth_query_cache_ttl: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// The challenge for a plaintext secret, named as PostgreSQL's `password_encryption` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Method {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
}

/// An `[auth]` setting that cannot work.
#[derive(Debug, Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    pub key: &'static str,
    pub message: String,
}

fn fail<T>(key: &'static str, message: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError {
        key,
        message: message.into(),
    })
}

impl AuthSettings {
    /// True when pgward has a source of client secrets (a file or a query).
    pub fn is_configured(&self) -> bool {
        self.auth_file.is_some() || self.auth_query.is_some()
    }

    /// Every check that needs no network: ranges, the settings that go together, the auth
    /// user's password readable, the users file parsed.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (key, value, (min, max)) in [
            (
                "auth.failed_login_delay",
                self.failed_login_delay.0,
                FAILED_LOGIN_DELAY_RANGE,
            ),
            (
                "auth.auth_query_timeout",
                self.auth_query_timeout.0,
                QUERY_TIMEOUT_RANGE,
            ),
            (
                "auth.auth_query_cache_ttl",
                self.auth_query_cache_ttl.0,
                CACHE_TTL_RANGE,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return fail(
                    key,
                    format!("{value:?} is out of range: must be {min:?}..={max:?}"),
                );
            }
        }
        match (&self.auth_query, &self.auth_user) {
            (Some(query), Some(user)) => {
                if !query.contains("$1") {
                    return fail("auth.auth_query", "the query must take the user name as $1");
                }
                if user.is_empty() || user.len() > 63 {
                    return fail("auth.auth_user", "needs 1..=63 bytes");
                }
                self.auth_password()?;
            }
            (Some(_), None) => return fail("auth.auth_user", "auth_query needs auth_user"),
            (None, Some(_)) => {
                return fail("auth.auth_user", "auth_user is used only with auth_query");
            }
            (None, None) => {}
        }
        if self.auth_dbname.is_empty() || self.auth_dbname.len() > 63 {
            return fail("auth.auth_dbname", "needs 1..=63 bytes");
        }
        if let Some(path) = &self.auth_file {
            UsersTable::load(path).map_err(|e| SettingsError {
                key: "auth.auth_file",
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The auth user's password: from `auth_password_file` or `auth_password_env` (at most one;
    /// neither: the auth user logs in without one, e.g. `trust` on a private network).
    pub fn auth_password(&self) -> Result<Option<String>, SettingsError> {
        match (&self.auth_password_file, &self.auth_password_env) {
            (Some(_), Some(_)) => fail(
                "auth.auth_password_file",
                "set auth_password_file or auth_password_env, not both",
            ),
            (Some(path), None) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned())),
                Err(e) => fail(
                    "auth.auth_password_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
            },
            (None, Some(var)) => match std::env::var(var) {
                Ok(password) => Ok(Some(password)),
                Err(e) => fail("auth.auth_password_env", format!("{var}: {e}")),
            },
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut AuthSettings)) -> AuthSettings {
        let mut settings = AuthSettings::default();
        edit(&mut settings);
        settings
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let settings = AuthSettings::default();
        settings.validate().unwrap();
        assert!(!settings.is_configured());
    }

    #[test]
    fn bad_settings_are_refused_by_key() {
        let query = || Some("SELECT usename, passwd FROM pg_shadow WHERE usename = $1".into());
        let cases = [
            (
                with(|s| s.failed_login_delay.0 = Duration::from_secs(11)),
                "auth.failed_login_delay",
            ),
            (
                with(|s| s.auth_query_timeout.0 = Duration::ZERO),
                "auth.auth_query_timeout",
            ),
            (
                with(|s| s.auth_query_cache_ttl.0 = Duration::from_secs(7200)),
                "auth.auth_query_cache_ttl",
            ),
            (with(|s| s.auth_query = query()), "auth.auth_user"),
            (
                with(|s| s.auth_user = Some("pgward".into())),
                "auth.auth_user",
            ),
            (
                with(|s| {
                    s.auth_query = Some("SELECT usename, passwd FROM pg_shadow".into());
                    s.auth_user = Some("pgward".into());
                }),
                "auth.auth_query",
            ),
            (
                with(|s| {
                    s.auth_query = query();
                    s.auth_user = Some("pgward".into());
                    s.auth_password_file = Some("/nonexistent/pw".into());
                }),
                "auth.auth_password_file",
            ),
            (
                with(|s| {
                    s.auth_query = query();
                    s.auth_user = Some("pgward".into());
                    s.auth_password_env = Some("PGWARD_TEST_UNSET_VARIABLE".into());
                }),
                "auth.auth_password_env",
            ),
            (
                with(|s| s.auth_file = Some("/nonexistent/userlist.txt".into())),
                "auth.auth_file",
            ),
        ];
        for (settings, key) in cases {
            let e = settings.validate().expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
    }
}

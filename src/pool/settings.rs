//! `[pool]` in pgward.toml: the pool mode, the sizes and timeouts of every pool, the parameters
//! of the StartupMessage pgward sends when it logs in itself, and where each user's upstream
//! password is read from (a file or an environment variable; never pgward.toml). Every numeric
//! key has a range, checked by [`PoolSettings::validate`] (through `Config::validate`, so by
//! `pgward check` and at start).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::units::{DurationOrOff, HumanDuration};

/// `pool_mode`: whether a client holds one server connection for its whole session (today's
/// relay) or only for each transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// One upstream connection per client, its own login relayed: nothing is pooled.
    #[default]
    Session,
    /// Server connections are shared: a client holds one from the start of a transaction to
    /// its end (ReadyForQuery 'I').
    Transaction,
}

/// `[pool]` in pgward.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pool, checked out, idle or opening.
    pub pool_size: usize,
    /// Server connections each pool keeps open even when unused (opened in the background).
    pub min_pool_size: usize,
    /// Pools at once; a pool without connections or clients gives way to a new one.
    pub max_pools: usize,
    /// An idle server connection unused this long is closed (down to `min_pool_size`).
    pub server_idle_timeout: DurationOrOff,
    /// A server connection older than this is closed when released or while idle, never while
    /// a client holds it.
    pub server_lifetime: DurationOrOff,
    /// Longest a client waits for a free server connection before its checkout fails (53300).
    pub query_wait_timeout: HumanDuration,
    /// Clients waiting for a server connection at once, per pool; one more fails at once.
    pub max_waiting_clients: usize,
    /// Run on a server connection released as `Dirty` before another client gets it; ""
    /// closes such connections instead.
    pub server_reset_query: String,
    /// TCP connect, TLS and login of one new server connection, together.
    pub server_login_timeout: HumanDuration,
    /// Extra StartupMessage parameters of pgward's own logins (e.g. application_name).
    pub startup_parameters: BTreeMap<String, String>,
    /// Where each user's upstream password is read from.
    pub credentials: Vec<Credential>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            pool_mode: PoolMode::Session,
            pool_size: 20,
            min_pool_size: 0,
            max_pools: 100,
            server_idle_timeout: DurationOrOff(Some(Duration::from_secs(600))),
            server_lifetime: DurationOrOff(Some(Duration::from_secs(3600))),
            query_wait_timeout: HumanDuration(Duration::from_secs(120)),
            max_waiting_clients: 1000,
            server_reset_query: "DISCARD ALL".into(),
            server_login_timeout: HumanDuration(Duration::from_secs(15)),
            startup_parameters: BTreeMap::new(),
            credentials: Vec::new(),
        }
    }
}

/// `[[pool.credentials]]`: the upstream password of one user, from exactly one source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The PostgreSQL role (the user name clients log in with).
    pub user: String,
    /// A file holding the password (trailing newline ignored), e.g. a mounted Secret.
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    pub password_env: Option<String>,
}

/// A password read from a file or the environment; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A `[pool]` setting that cannot work, by key.
#[derive(Debug, Error)]
#[error("{key}: {message}")]
pub struct PoolSettingsError {
    pub key: &'static str,
    pub message: String,
}

/// Most `[[pool.credentials]]` entries.
pub const MAX_CREDENTIALS: usize = 1000;
/// Most `[pool.startup_parameters]` entries.
pub const MAX_STARTUP_PARAMETERS: usize = 32;
/// PostgreSQL truncates identifiers (role and parameter names) past 63 bytes.
const MAX_NAME: usize = 63;
const MAX_PARAMETER_VALUE: usize = 1024;
const MAX_RESET_QUERY: usize = 4096;
/// Startup parameters pgward sets itself (user, database) or never sends (replication).
const RESERVED_PARAMETERS: [&str; 3] = ["user", "database", "replication"];

fn invalid<T>(key: &'static str, message: impl Into<String>) -> Result<T, PoolSettingsError> {
    Err(PoolSettingsError {
        key,
        message: message.into(),
    })
}

fn count(key: &'static str, value: usize, min: usize, max: usize) -> Result<(), PoolSettingsError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    invalid(
        key,
        format!("{value} is out of range: must be {min}..={max}"),
    )
}

fn duration(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), PoolSettingsError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    invalid(
        key,
        format!("{value:?} is out of range: must be {min:?}..={max:?}"),
    )
}

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

impl PoolSettings {
    /// Checks every key against its documented range (docs/operations.md); in transaction
    /// mode also that every configured password can be read.
    pub fn validate(&self) -> Result<(), PoolSettingsError> {
        count("pool.pool_size", self.pool_size, 1, 10_000)?;
        count("pool.min_pool_size", self.min_pool_size, 0, self.pool_size)?;
        count("pool.max_pools", self.max_pools, 1, 10_000)?;
        count(
            "pool.max_waiting_clients",
            self.max_waiting_clients,
            0,
            100_000,
        )?;
        if let Some(idle) = self.server_idle_timeout.0 {
            duration("pool.server_idle_timeout", idle, SECOND, DAY)?;
        }
        if let Some(lifetime) = self.server_lifetime.0 {
            duration("pool.server_lifetime", lifetime, SECOND, 30 * DAY)?;
        }
        let wait = self.query_wait_timeout.0;
        duration(
            "pool.query_wait_timeout",
            wait,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?;
        let login = self.server_login_timeout.0;
        duration(
            "pool.server_login_timeout",
            login,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )?;
        let reset = &self.server_reset_query;
        if reset.len() > MAX_RESET_QUERY || reset.contains('\0') {
            return invalid("pool.server_reset_query", "at most 4096 bytes, without NUL");
        }
        self.check_parameters()?;
        self.check_credentials()?;
        if self.pool_mode == PoolMode::Transaction {
            self.resolve_passwords()?;
        }
        Ok(())
    }

    fn check_parameters(&self) -> Result<(), PoolSettingsError> {
        let key = "pool.startup_parameters";
        if self.startup_parameters.len() > MAX_STARTUP_PARAMETERS {
            return invalid(key, "at most 32 parameters");
        }
        for (name, value) in &self.startup_parameters {
            let good_name = !name.is_empty()
                && name.len() <= MAX_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !good_name {
                return invalid(key, format!("{name:?} is not a parameter name"));
            }
            if RESERVED_PARAMETERS.contains(&name.as_str()) {
                return invalid(
                    key,
                    format!("{name} is set by the pool itself (the pool's database and user)"),
                );
            }
            if value.len() > MAX_PARAMETER_VALUE || value.contains('\0') {
                return invalid(
                    key,
                    format!("the value of {name} must be at most 1024 bytes, without NUL"),
                );
            }
        }
        Ok(())
    }

    fn check_credentials(&self) -> Result<(), PoolSettingsError> {
        let key = "pool.credentials";
        if self.credentials.len() > MAX_CREDENTIALS {
            return invalid(key, "at most 1000 entries");
        }
        let mut users = HashSet::new();
        for c in &self.credentials {
            if c.user.is_empty() || c.user.len() > MAX_NAME || c.user.contains('\0') {
                return invalid(key, "each user name needs 1..=63 bytes, without NUL");
            }
            if !users.insert(c.user.as_str()) {
                return invalid(key, format!("user {:?} is listed twice", c.user));
            }
            match (&c.password_file, &c.password_env) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return invalid(
                        key,
                        format!(
                            "user {:?}: set password_file or password_env (exactly one)",
                            c.user
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Every configured password, read now, by user.
    pub fn resolve_passwords(&self) -> Result<HashMap<String, Password>, PoolSettingsError> {
        let key = "pool.credentials";
        let mut out = HashMap::with_capacity(self.credentials.len());
        for c in &self.credentials {
            let text = match (&c.password_file, &c.password_env) {
                (Some(path), None) => match std::fs::read_to_string(path) {
                    Ok(text) => text.trim_end_matches(['\r', '\n']).to_owned(),
                    Err(e) => {
                        let message =
                            format!("user {:?}: cannot read {}: {e}", c.user, path.display());
                        return invalid(key, message);
                    }
                },
                (None, Some(name)) => match std::env::var(name) {
                    Ok(text) => text,
                    Err(e) => {
                        let message =
                            format!("user {:?}: environment variable {name}: {e}", c.user);
                        return invalid(key, message);
                    }
                },
                _ => return invalid(key, format!("user {:?}: no password source", c.user)),
            };
            if text.is_empty() || text.contains('\0') {
                return invalid(
                    key,
                    format!("user {:?}: the password is empty or holds NUL", c.user),
                );
            }
            out.insert(c.user.clone(), Password(text));
        }
        Ok(out)
    }

    /// The startup parameters in the order they are sent.
    pub fn parameters(&self) -> Vec<(String, String)> {
        self.startup_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The limits of every pool, from `[pool]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub size: usize,
    pub min_size: usize,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    pub wait_timeout: Duration,
    pub max_waiting: usize,
    /// `None`: `server_reset_query = ""`, dirty connections are closed.
    pub reset_query: Option<Arc<str>>,
}

impl Limits {
    pub fn from_settings(s: &PoolSettings) -> Limits {
        Limits {
            size: s.pool_size,
            min_size: s.min_pool_size,
            idle_timeout: s.server_idle_timeout.0,
            lifetime: s.server_lifetime.0,
            wait_timeout: s.query_wait_timeout.0,
            max_waiting: s.max_waiting_clients,
            reset_query: (!s.server_reset_query.trim().is_empty())
                .then(|| Arc::from(s.server_reset_query.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PoolSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_session_mode_and_valid() {
        let s = PoolSettings::default();
        assert_eq!(s.pool_mode, PoolMode::Session);
        assert_eq!(s.server_reset_query, "DISCARD ALL");
        s.validate().unwrap();
        assert_eq!(
            parse("pool_mode = \"transaction\"").pool_mode,
            PoolMode::Transaction
        );
    }

    #[test]
    fn out_of_range_values_are_refused_by_key() {
        for (text, key) in [
            ("pool_size = 0", "pool.pool_size"),
            ("pool_size = 10001", "pool.pool_size"),
            ("pool_size = 5\nmin_pool_size = 6", "pool.min_pool_size"),
            ("max_pools = 0", "pool.max_pools"),
            ("max_waiting_clients = 100001", "pool.max_waiting_clients"),
            (
                "server_idle_timeout = \"500ms\"",
                "pool.server_idle_timeout",
            ),
            ("server_lifetime = \"31d\"", "pool.server_lifetime"),
            ("query_wait_timeout = \"2h\"", "pool.query_wait_timeout"),
            (
                "server_login_timeout = \"10ms\"",
                "pool.server_login_timeout",
            ),
        ] {
            let e = parse(text).validate().expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains("out of range"), "{text}: {e}");
        }
        let off = parse("server_idle_timeout = \"off\"\nserver_lifetime = \"off\"");
        off.validate().unwrap();
    }

    #[test]
    fn parameters_and_credentials_are_checked() {
        for (text, key) in [
            (
                "[startup_parameters]\nuser = \"x\"",
                "pool.startup_parameters",
            ),
            (
                "[startup_parameters]\n\"bad name\" = \"x\"",
                "pool.startup_parameters",
            ),
            ("[[credentials]]\nuser = \"app\"", "pool.credentials"),
            (
                "[[credentials]]\nuser = \"app\"\npassword_env = \"A\"\npassword_file = \"/f\"",
                "pool.credentials",
            ),
            (
                "[[credentials]]\nuser = \"app\"\npassword_env = \"A\"\n[[credentials]]\nuser = \"app\"\npassword_env = \"B\"",
                "pool.credentials",
            ),
        ] {
            let e = parse(text).validate().expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
        }
        // A password in pgward.toml is not a key at all.
        assert!(
            toml::from_str::<PoolSettings>("[[credentials]]\nuser = \"a\"\npassword = \"x\"")
                .is_err()
        );
    }

    #[test]
    fn passwords_are_read_in_transaction_mode_only() {
        let missing = "[[credentials]]\nuser = \"app\"\npassword_file = \"/nonexistent/pw\"";
        parse(missing).validate().unwrap();
        let e = parse(&format!("pool_mode = \"transaction\"\n{missing}"))
            .validate()
            .unwrap_err();
        assert!(e.message.contains("cannot read /nonexistent/pw"), "{e}");
        let dir = std::env::temp_dir().join(format!("pgward-pool-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let text = format!(
            "pool_mode = \"transaction\"\n[[credentials]]\nuser = \"app\"\npassword_file = \"{}\"",
            dir.display()
        );
        let passwords = parse(&text).resolve_passwords().unwrap();
        assert_eq!(passwords.get("app"), Some(&Password::new("s3cret")));
        assert_eq!(format!("{:?}", passwords.get("app")), "Some(Password(***))");
        let _ = std::fs::remove_file(&dir);
    }
}

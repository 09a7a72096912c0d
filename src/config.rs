//! pgward.toml + command-line flags -> [`Config`], composed of each module's own settings.
//! Loading collects TOML errors with file, line, column and key; [`Config::validate`] checks what
//! TOML cannot (addresses, file pairs) before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::admin::AdminSettings;
use crate::cache::CacheSettings;
use crate::console::ConsoleSettings;
use crate::pool::PoolSettings;
use crate::server::{ClientTlsMode, ServerSettings};
use crate::stats::StatsSettings;
use crate::units::DurationOrOff;
use crate::upstream::{UpstreamSettings, UpstreamTlsMode};

/// Everything pgward needs to run.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub admin: AdminSettings,
    pub stats: StatsSettings,
    pub cache: CacheSettings,
    /// `pool_mode` and the server connection pools of transaction mode.
    pub pool: PoolSettings,
    pub log: LogSettings,
    /// The admin console (the `pgward` database on the client listener).
    pub console: ConsoleSettings,
    /// Client authentication by pgward itself (users file, auth_query).
    pub auth: crate::auth::AuthSettings,
    /// Path of the rules file; relative paths are resolved against the config file's folder.
    pub rules: Option<PathBuf>,
}

/// Logging.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter, e.g. "info" or "pgward=debug"; `RUST_LOG` overrides it.
    pub level: String,
    /// Statements slower than this are logged once (fingerprint, normalized text, duration,
    /// rule, outcome; never literals); "off" disables the slow statement log.
    pub slow_statement: DurationOrOff,
    pub format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            slow_statement: DurationOrOff(Some(std::time::Duration::from_secs(1))),
            format: LogFormat::Text,
        }
    }
}

/// A configuration problem; `pgward` exits with status 2 on any of them.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl From<crate::admin::AdminError> for ConfigError {
    fn from(e: crate::admin::AdminError) -> Self {
        match e {
            crate::admin::AdminError::Setting { key, message } => {
                ConfigError::Invalid { key, message }
            }
            other => ConfigError::Invalid {
                key: "admin.listen",
                message: other.to_string(),
            },
        }
    }
}

impl Config {
    /// Reads and parses a config file (without validating it).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config = Config::parse(path, &text)?;
        if let Some(rules) = &config.rules
            && rules.is_relative()
            && let Some(dir) = path.parent()
        {
            config.rules = Some(dir.join(rules));
        }
        Ok(config)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column, key) = locate(text, e.span());
            ConfigError::Parse {
                path: path.into(),
                line,
                column,
                key,
                message: e.message().to_owned(),
            }
        })
    }

    /// Checks the values TOML types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "listen",
                format!("{:?} is not an IP:port address", self.server.listen),
            );
        }
        if !self.admin.listen.is_empty()
            && self.admin.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return invalid(
                "admin.listen",
                format!(
                    "{:?} is not an IP:port address (or \"\" to disable)",
                    self.admin.listen
                ),
            );
        }
        self.admin
            .resolve_token(std::env::var(crate::admin::guard::TOKEN_ENV).ok())?;
        self.console
            .resolve_password()
            .map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })?;
        self.auth.validate().map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })?;
        if self.pool.pool_mode == crate::pool::PoolMode::Transaction && !self.auth.is_configured() {
            return invalid(
                "pool.pool_mode",
                "\"transaction\" needs [auth] (auth_file and/or auth_query): pgward then logs \
                 clients in itself, since they share PostgreSQL's connections"
                    .into(),
            );
        }
        if crate::upstream::split_host_port(&self.upstream.address).is_none() {
            return invalid(
                "upstream.address",
                format!(
                    "{:?} is not HOST:PORT (or SOCKET_DIRECTORY:PORT for a Unix socket)",
                    self.upstream.address
                ),
            );
        }
        if let Some(dir) = &self.server.unix_socket_dir {
            // sun_path holds 108 bytes; the file name adds ".s.PGSQL.NNNNN".
            if dir.as_os_str().len() > 90 {
                return invalid(
                    "server.unix_socket_dir",
                    format!(
                        "{} is too long for a Unix socket path (at most 90 bytes)",
                        dir.display()
                    ),
                );
            }
            if !dir.is_dir() {
                return invalid(
                    "server.unix_socket_dir",
                    format!("{} is not a directory", dir.display()),
                );
            }
        }
        if crate::upstream::unix_socket_path(&self.upstream.address).is_some()
            && matches!(
                self.upstream.tls,
                crate::upstream::UpstreamTlsMode::Require
                    | crate::upstream::UpstreamTlsMode::VerifyFull
            )
        {
            return invalid(
                "upstream.tls",
                "a Unix socket has no TLS (PostgreSQL offers none there): use tls = \"disable\" or \"prefer\", or a HOST:PORT address".into(),
            );
        }
        if self.server.tls.cert.is_some() != self.server.tls.key.is_some() {
            return invalid("tls", "tls.cert and tls.key must be set together".into());
        }
        if self.upstream.tls == UpstreamTlsMode::VerifyFull && self.upstream.ca_file.is_none() {
            return invalid(
                "upstream.ca_file",
                "upstream.tls = \"verify-full\" needs upstream.ca_file".into(),
            );
        }
        if !(1024..=1 << 30).contains(&self.server.max_message_size.0) {
            return invalid("max_message_size", "must be 1KiB..1GiB".into());
        }
        let auth_timeout = self.server.auth_timeout.0;
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&auth_timeout) {
            return invalid("auth_timeout", "must be 1s..10m".into());
        }
        if self.server.tls.mode == ClientTlsMode::Require && self.server.tls.cert.is_none() {
            return invalid(
                "tls.mode",
                "tls.mode = \"require\" needs tls.cert and tls.key".into(),
            );
        }
        self.pool.validate().map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })?;
        self.check_ranges()
    }

    /// Every numeric key against its documented range (docs/operations.md): an absurd value is
    /// refused here, by `pgward check` and at start, rather than panicking or starving later.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        check_count(
            "max_client_connections",
            s.max_client_connections as u64,
            1,
            100_000,
        )?;
        check_count("workers", s.workers as u64, 0, 256)?;
        check_count(
            "stats.max_fingerprints",
            self.stats.max_fingerprints as u64,
            1,
            1_000_000,
        )?;
        check_count(
            "stats.metrics_top",
            self.stats.metrics_top as u64,
            0,
            10_000,
        )?;
        check_count("cache.max_size", self.cache.max_size.0, 0, 64 << 30)?;
        check_duration(
            "shutdown_timeout",
            s.shutdown_timeout.0,
            Duration::ZERO,
            HOUR,
        )?;
        let connect = self.upstream.connect_timeout.0;
        check_duration(
            "upstream.connect_timeout",
            connect,
            Duration::from_millis(100),
            5 * MINUTE,
        )?;
        check_duration(
            "admin.header_timeout",
            self.admin.header_timeout.0,
            Duration::from_millis(100),
            5 * MINUTE,
        )?;
        check_count(
            "admin.max_connections",
            self.admin.max_connections as u64,
            1,
            10_000,
        )?;
        if let Some(slow) = self.log.slow_statement.0 {
            check_duration("log.slow_statement", slow, Duration::from_millis(1), HOUR)?;
        }
        Ok(())
    }
}

/// `value` of `key` within `min..=max`, else an error that names the key, the value and the range.
fn check_count(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let message = format!("{value} is out of range: must be {min}..={max}");
    Err(ConfigError::Invalid { key, message })
}

fn check_duration(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let message = format!("{value:?} is out of range: must be {min:?}..={max:?}");
    Err(ConfigError::Invalid { key, message })
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Line and column (1-based) of a byte span, and the key written on that line.
fn locate(text: &str, span: Option<std::ops::Range<usize>>) -> (usize, usize, String) {
    let Some(span) = span else {
        return (1, 1, String::from("(file)"));
    };
    // A span from the parser is trusted for nothing: clamp it and step back to a char boundary,
    // so a span inside a multi-byte character cannot panic the error report.
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start = start.saturating_sub(1);
    }
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |b| b.chars().count()) + 1;
    let line_text = text
        .get(line_start..)
        .and_then(|t| t.lines().next())
        .unwrap_or("");
    let key = match line_text.split_once('=') {
        Some((key, _)) => key.trim().to_owned(),
        None => line_text.trim().to_owned(),
    };
    (line, column, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_inside_a_multibyte_character_is_located_without_panicking() {
        let text = "a = 1\nkey = \"\u{e9}\u{e9}\"\n";
        let inside = text.find('\u{e9}').unwrap() + 1;
        assert_eq!(locate(text, Some(inside..inside + 1)), (2, 8, "key".into()));
        assert_eq!(locate(text, Some(10_000..10_001)).0, 3);
    }

    #[test]
    fn console_settings_are_checked_with_the_rest() {
        for (text, key) in [
            ("[console]\nusers = [\"ops\"]", "console.password"),
            ("[console]\npassword = \"long-enough\"", "console.users"),
            (
                "[console]\nusers = [\"ops\"]\npassword_file = \"/nonexistent/pw\"",
                "console.password_file",
            ),
        ] {
            let c = Config::parse(Path::new("pgward.toml"), text).unwrap();
            let e = c.validate().expect_err(text).to_string();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:6432");
        assert_eq!(c.upstream.address, "127.0.0.1:5432");
        assert_eq!(c.admin.listen, "127.0.0.1:6480");
        assert_eq!(c.server.max_message_size.0, 64 << 20);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "listen = \"127.0.0.1:7000\"\n[upstream]\naddres = \"db:5432\"\n";
        let err = Config::parse(Path::new("pgward.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("pgward.toml:3:1: addres: unknown field `addres`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Config::parse(Path::new("p.toml"), "max_client_connections = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:1:"), "{err}");
        assert!(err.contains("max_client_connections"), "{err}");
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut c = Config::default();
        c.upstream.address = "nohost".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("upstream.address")
        );
        let mut c = Config::default();
        c.server.tls.cert = Some("a.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("tls.key"));
    }

    #[test]
    fn numeric_keys_outside_their_range_are_refused_by_name() {
        let cases: [(&str, &str); 11] = [
            ("[admin]\nheader_timeout = \"0s\"", "admin.header_timeout"),
            ("[admin]\nheader_timeout = \"1h\"", "admin.header_timeout"),
            ("[admin]\nmax_connections = 0", "admin.max_connections"),
            ("max_client_connections = 0", "max_client_connections"),
            (
                "max_client_connections = 9223372036854775807",
                "max_client_connections",
            ),
            ("workers = 100000", "workers"),
            ("[stats]\nmax_fingerprints = 0", "stats.max_fingerprints"),
            (
                "[upstream]\nconnect_timeout = \"0s\"",
                "upstream.connect_timeout",
            ),
            ("[log]\nslow_statement = \"100d\"", "log.slow_statement"),
            ("[pool]\npool_size = 0", "pool.pool_size"),
            (
                "[pool]\nquery_wait_timeout = \"0s\"",
                "pool.query_wait_timeout",
            ),
        ];
        for (text, key) in cases {
            let c = Config::parse(Path::new("pgward.toml"), text).unwrap();
            let e = c.validate().expect_err(text).to_string();
            assert!(
                e.starts_with(key) && e.contains("out of range"),
                "{text}: {e}"
            );
        }
        Config::default().validate().unwrap();
    }

    #[test]
    fn example_file_in_the_repository_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pgward.toml");
        let c = Config::load(&path).unwrap();
        c.validate().unwrap();
    }

    /// The container configs bind the admin port on 0.0.0.0: valid with a token, refused
    /// without one.
    #[test]
    fn container_configs_need_the_admin_token() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let configmap = std::fs::read_to_string(root.join("docker/k8s/configmap.yaml")).unwrap();
        let k8s: String = configmap
            .split("pgward.toml: |\n")
            .nth(1)
            .and_then(|rest| rest.split("  rules.toml: |").next())
            .unwrap()
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let docker = std::fs::read_to_string(root.join("docker/pgward.toml")).unwrap();
        for (name, text) in [("k8s", k8s), ("docker", docker)] {
            let c = Config::parse(Path::new(name), &text).unwrap();
            let refused = c.admin.resolve_token(None).expect_err(name).to_string();
            assert!(refused.contains("not a loopback"), "{name}: {refused}");
            let token = c.admin.resolve_token(Some("from-a-secret".into())).unwrap();
            assert_eq!(token.as_deref(), Some("from-a-secret"), "{name}");
        }
    }
}

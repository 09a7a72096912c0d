//! The Postgres side: settings, opening a connection (TCP, optional TLS), and cancelling a
//! running query. Sessions see only [`Upstream::connect`] and [`CancelTarget`], so a pool can
//! replace the one-connection-per-client model later without touching them.

mod cancel;
mod connect;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use cancel::CancelTarget;
pub use connect::Upstream;

use crate::units::HumanDuration;

/// `[upstream]` in pgward.toml.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// HOST:PORT of the PostgreSQL server.
    pub address: String,
    /// TLS toward Postgres.
    pub tls: UpstreamTlsMode,
    /// PEM file of the CA that signed the server certificate (needed by verify-full).
    pub ca_file: Option<PathBuf>,
    /// How long connecting (TCP + TLS) may take.
    pub connect_timeout: HumanDuration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            address: "127.0.0.1:5432".into(),
            tls: UpstreamTlsMode::Prefer,
            ca_file: None,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// Like libpq's sslmode, without the modes that verify less than they claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without certificate checks; plaintext otherwise.
    Prefer,
    /// TLS or fail; the certificate is not checked.
    Require,
    /// TLS or fail; the certificate must chain to `ca_file` and match the host name.
    VerifyFull,
}

/// Why the upstream could not be reached.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("could not connect to upstream {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to upstream {address} timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("upstream {address} refused TLS, and upstream.tls requires it")]
    TlsRefused { address: String },
    #[error("TLS handshake with upstream {address} failed: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("upstream TLS setup: {0}")]
    TlsConfig(String),
    #[error("upstream address {0:?} is not HOST:PORT")]
    BadAddress(String),
}

/// Splits "host:port" (or "[v6]:port").
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

/// The socket file of a `DIRECTORY:PORT` address (a host starting with `/`, as libpq reads it):
/// `DIRECTORY/.s.PGSQL.PORT`; `None` for a network address.
pub fn unix_socket_path(address: &str) -> Option<std::path::PathBuf> {
    let (host, port) = split_host_port(address)?;
    host.starts_with('/')
        .then(|| std::path::Path::new(host).join(format!(".s.PGSQL.{port}")))
}

#[cfg(test)]
mod tests {
    use super::{split_host_port, unix_socket_path};

    #[test]
    fn a_directory_host_is_a_unix_socket() {
        assert_eq!(
            unix_socket_path("/var/run/postgresql:5432"),
            Some(std::path::PathBuf::from(
                "/var/run/postgresql/.s.PGSQL.5432"
            ))
        );
        assert_eq!(unix_socket_path("db:5432"), None);
        assert_eq!(unix_socket_path("/tmp"), None, "a port is needed");
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("db:5432"), Some(("db", 5432)));
        assert_eq!(split_host_port("[::1]:6543"), Some(("::1", 6543)));
        assert_eq!(split_host_port("db"), None);
        assert_eq!(split_host_port(":5432"), None);
        assert_eq!(split_host_port("db:99999"), None);
    }
}

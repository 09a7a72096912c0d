//! The client side: accepting connections, the startup handshake (TLS, cancel requests,
//! StartupMessage), and the session relay that carries every message between the client and its
//! upstream connection.

mod buffer;
mod cancel_keys;
mod handles;
mod leg;
mod listener;
mod pooled;
mod pooled_login;
mod relay;
mod session;
mod startup;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use cancel_keys::CancelKeys;
pub use handles::{ConnectionSlot, Handles};
pub use listener::{Listeners, serve};
pub use tls::client_tls_acceptor;

use crate::units::{ByteSize, HumanDuration};

/// Top-level keys of pgward.toml that concern client connections.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address clients connect to.
    pub listen: String,
    /// A directory for a Unix-domain socket clients on this host may connect to as well,
    /// named as PostgreSQL names its own: `<dir>/.s.PGSQL.<port of listen>`.
    pub unix_socket_dir: Option<std::path::PathBuf>,
    /// Sessions beyond this get SQLSTATE 53300. Connections are counted from accept: at most
    /// this many plus [`HANDSHAKE_RESERVE`] sockets are held at once (the reserve lets cancel
    /// requests through when every session slot is taken); beyond that a connection is
    /// answered 53300 and closed without a task.
    pub max_client_connections: usize,
    /// From accept to the first ReadyForQuery (startup, TLS, upstream connect and
    /// authentication): a login taking longer is closed with 57014, as PostgreSQL's
    /// `authentication_timeout` does.
    pub auth_timeout: HumanDuration,
    /// Largest message a client or server may send (tag + length + body).
    pub max_message_size: ByteSize,
    /// On SIGTERM/SIGINT: how long busy sessions may take to finish before they are closed.
    pub shutdown_timeout: HumanDuration,
    /// TLS toward clients.
    pub tls: ClientTlsSettings,
    /// Runtime threads serving sessions: 1 = a single-threaded runtime; 0 = automatic (one
    /// thread on machines with up to 2 cores, where pgward shares the CPUs with Postgres;
    /// otherwise one per core).
    pub workers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:6432".into(),
            unix_socket_dir: None,
            max_client_connections: 1000,
            auth_timeout: HumanDuration(Duration::from_secs(15)),
            max_message_size: ByteSize(64 << 20),
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
            tls: ClientTlsSettings::default(),
            workers: 0,
        }
    }
}

/// Connections accepted beyond `max_client_connections`, for handshakes that end without a
/// session (cancel requests, logins that fail); see [`ServerSettings::max_client_connections`].
pub const HANDSHAKE_RESERVE: usize = 64;

/// `[tls]`: certificate and key offered to clients that send SSLRequest.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Whether clients may connect without TLS (PgBouncer's `client_tls_sslmode`).
    pub mode: ClientTlsMode,
}

/// `[tls] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// TLS when the client asks for it (and `cert`/`key` are set); plaintext otherwise.
    #[default]
    Allow,
    /// Plaintext sessions are refused with 28000 (cancel requests are still accepted, as
    /// libpq sends them in plaintext); needs `cert` and `key`.
    Require,
}

//! The admin HTTP endpoint for ops (axum): query stats as JSON, Prometheus metrics, rules,
//! the result cache, client sessions, server connection pools, health, and a dashboard page at `/`. Binds loopback by default; a bearer
//! token (required off loopback) guards everything but `/healthz` and the page itself (whose
//! script sends the token); foreign `Host` names and cross-site POSTs are refused
//! ([`guard`]).

mod cache_routes;
mod dashboard;
pub mod guard;
mod listener;
mod metrics;
mod pools;
mod routes;
mod stall;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use thiserror::Error;

use crate::cache::ResultCache;
use crate::pool::Pools;
use crate::reload::Rules;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::units::HumanDuration;
use crate::upstream::Upstream;

/// `[admin]` in pgward.toml.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address of the admin HTTP endpoint; "" disables it.
    pub listen: String,
    /// When set, requests need `Authorization: Bearer <token>` (except `/healthz`).
    pub token: Option<String>,
    /// A file holding the token (trailing newline ignored), e.g. a mounted Secret.
    pub token_file: Option<PathBuf>,
    /// Host names the endpoint answers to besides IP literals and localhost; "*" for any.
    pub allowed_hosts: Vec<String>,
    /// A request header must arrive within this (also ends idle keep-alive connections).
    pub header_timeout: HumanDuration,
    /// Admin connections at once; more are refused at accept.
    pub max_connections: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "127.0.0.1:6480".into(),
            token: None,
            token_file: None,
            allowed_hosts: Vec::new(),
            header_timeout: HumanDuration(Duration::from_secs(10)),
            max_connections: 64,
        }
    }
}

/// What the admin endpoint uses of the process, and nothing more.
pub struct Handles {
    pub settings: AdminSettings,
    /// `stats.metrics_top`: per-fingerprint series on `/metrics`.
    pub metrics_top: usize,
    pub stats: Arc<Stats>,
    pub rules: Arc<Rules>,
    pub cache: Arc<ResultCache>,
    /// For `/healthz`, which checks that PostgreSQL answers.
    pub upstream: Arc<Upstream>,
    /// For `/sessions`.
    pub sessions: Arc<Sessions>,
    /// For `/pools` and the pool families of `/metrics`; `None` in session mode.
    pub pools: Option<Arc<Pools>>,
}

/// Longest user-given value (a parameter, a name) that logs and error messages repeat.
const MAX_ECHOED: usize = 64;

/// `value` cut to at most [`MAX_ECHOED`] bytes at a char boundary, with `…` when cut: request
/// values reach logs and error bodies only through this.
pub(crate) fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_ECHOED {
        return value.into();
    }
    let mut end = MAX_ECHOED;
    while !value.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let head = value.get(..end).unwrap_or_default();
    format!("{head}…").into()
}

/// Why the admin endpoint cannot start: a bad `[admin]` setting, or its address.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("{key}: {message}")]
    Setting { key: &'static str, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A bound admin endpoint, with its token resolved.
pub struct AdminListener {
    listener: TcpListener,
    guard: Arc<guard::Guard>,
}

impl AdminListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Binds the admin listener, or returns `None` when it is disabled.
pub async fn bind(settings: &AdminSettings) -> Result<Option<AdminListener>, AdminError> {
    if settings.listen.is_empty() {
        return Ok(None);
    }
    let guard = Arc::new(guard::Guard::new(settings)?);
    let bind_error = |source| AdminError::Bind {
        addr: settings.listen.clone(),
        source,
    };
    let addr: SocketAddr = settings.listen.parse().map_err(|_| {
        bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an IP:port address",
        ))
    })?;
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    Ok(Some(AdminListener { listener, guard }))
}

/// Serves admin requests until shutdown.
pub async fn serve(app: Arc<Handles>, admin: AdminListener, shutdown: watch::Receiver<bool>) {
    let limits = listener::Limits {
        max_connections: app.settings.max_connections,
        header_timeout: app.settings.header_timeout.0,
    };
    let router = routes::router(app, admin.guard);
    listener::run(admin.listener, router, limits, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_cuts_long_values_at_a_char_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert!(clipped.ends_with('…') && clipped.len() <= 64 + '…'.len_utf8());
        assert_eq!(clipped.trim_end_matches('…'), "é".repeat(32));
        assert_eq!(clip(&"a".repeat(64)), "a".repeat(64));
    }
}

//! The crate's top-level error: what stops pgward from starting, and which part failed.

use std::net::SocketAddr;

use thiserror::Error;

use crate::config::ConfigError;
use crate::upstream::UpstreamError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("client TLS: {0}")]
    ClientTls(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("rules file rejected:\n{0}")]
    Rules(#[from] crate::rules::RulesError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("client authentication: {0}")]
    Auth(#[from] crate::auth::SetupError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn bind(addr: impl Into<String>, source: std::io::Error) -> Self {
        Error::Bind {
            addr: addr.into(),
            source,
        }
    }
}

/// Parses a listen address for binding.
pub fn listen_addr(text: &str) -> Result<SocketAddr, Error> {
    text.parse().map_err(|_| {
        Error::bind(
            text,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP:port address"),
        )
    })
}

//! Opening one connection to Postgres: TCP with NODELAY, then the SSLRequest dance when the
//! settings ask for TLS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{UpstreamError, UpstreamSettings, UpstreamTlsMode, split_host_port, unix_socket_path};
use crate::net::Stream;
use crate::protocol::startup::encode_ssl_request;
use crate::protocol::tag::ssl;

/// Knows how to reach the upstream; shared by all sessions.
pub struct Upstream {
    settings: UpstreamSettings,
    tls: Option<Arc<ClientConfig>>,
    /// `tls = "prefer"` fell back to plaintext at least once (said once in the log, not per
    /// session).
    plaintext_fallback: AtomicBool,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Result<Self, UpstreamError> {
        if split_host_port(&settings.address).is_none() {
            return Err(UpstreamError::BadAddress(settings.address));
        }
        let tls = super::tls::client_config(&settings)?;
        if settings.tls == UpstreamTlsMode::Prefer {
            tracing::info!(
                address = %settings.address,
                "upstream.tls = \"prefer\" does not verify the server's certificate; \
                 use \"verify-full\" in production"
            );
        }
        Ok(Upstream {
            settings,
            tls,
            plaintext_fallback: AtomicBool::new(false),
        })
    }

    pub fn address(&self) -> &str {
        &self.settings.address
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        self.settings.connect_timeout.0
    }

    /// The Unix-domain socket PostgreSQL listens on, when `address` names a directory
    /// (`/var/run/postgresql:5432` -> `/var/run/postgresql/.s.PGSQL.5432`, as libpq reads a
    /// host that starts with `/`).
    pub fn unix_socket(&self) -> Option<std::path::PathBuf> {
        unix_socket_path(&self.settings.address)
    }

    /// Opens a connection without TLS (TCP, or the Unix socket); used for CancelRequests,
    /// health checks, and under TLS negotiation.
    pub async fn connect_plain(&self) -> Result<Stream, UpstreamError> {
        let address = &self.settings.address;
        let timeout = self.settings.connect_timeout.0;
        let err = |source| UpstreamError::Connect {
            address: address.clone(),
            source,
        };
        let timed_out = |_| UpstreamError::Timeout {
            address: address.clone(),
            timeout,
        };
        #[cfg(unix)]
        if let Some(path) = self.unix_socket() {
            let unix = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                .await
                .map_err(timed_out)?
                .map_err(err)?;
            return Ok(Stream::Unix(unix));
        }
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(timed_out)?
            .map_err(err)?;
        tcp.set_nodelay(true).map_err(err)?;
        Ok(Stream::Plain(tcp))
    }

    /// Opens a session connection, negotiating TLS as configured.
    pub async fn connect(&self) -> Result<Stream, UpstreamError> {
        let timeout = self.settings.connect_timeout.0;
        let address = self.settings.address.clone();
        tokio::time::timeout(timeout, self.connect_inner())
            .await
            .map_err(|_| UpstreamError::Timeout { address, timeout })?
    }

    async fn connect_inner(&self) -> Result<Stream, UpstreamError> {
        let plain = self.connect_plain().await?;
        let Some(tls) = &self.tls else {
            return Ok(plain);
        };
        let mut tcp = match plain {
            Stream::Plain(tcp) => tcp,
            // No TLS over a Unix socket (PostgreSQL and libpq do not offer it either).
            other => return Ok(other),
        };
        let address = &self.settings.address;
        let io_err = |source| UpstreamError::Connect {
            address: address.clone(),
            source,
        };
        tcp.write_all(&encode_ssl_request()).await.map_err(io_err)?;
        let answer = tcp.read_u8().await.map_err(io_err)?;
        match answer {
            ssl::ACCEPTED => {}
            ssl::REFUSED if self.settings.tls == UpstreamTlsMode::Prefer => {
                if !self.plaintext_fallback.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        address = %address,
                        "upstream refused TLS: sessions use plaintext (upstream.tls = \"prefer\"); \
                         set \"require\" or \"verify-full\" to refuse instead"
                    );
                }
                return Ok(Stream::Plain(tcp));
            }
            _ => {
                return Err(UpstreamError::TlsRefused {
                    address: address.clone(),
                });
            }
        }
        let (host, _) =
            split_host_port(address).ok_or_else(|| UpstreamError::BadAddress(address.clone()))?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| UpstreamError::TlsConfig(e.to_string()))?;
        let stream = TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| UpstreamError::Tls {
                address: address.clone(),
                source,
            })?;
        Ok(Stream::UpstreamTls(Box::new(stream)))
    }
}

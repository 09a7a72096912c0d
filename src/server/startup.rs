//! The client's startup phase, before any upstream connection exists: SSLRequest (TLS or 'N'),
//! GSSENCRequest ('N'), CancelRequest (routed through the cancel-key map), and finally the
//! StartupMessage that opens a session.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::net::Stream;
use crate::protocol::build::Report;
use crate::protocol::sqlstate;
use crate::protocol::startup::{self, CancelKey, StartupMessage, StartupPacket};
use crate::protocol::tag::ssl;

/// What the startup phase ended with.
pub enum Opening {
    /// A StartupMessage: a session begins.
    Session {
        client: Stream,
        startup: StartupMessage,
    },
    /// A CancelRequest: route it, then close `client` (only then: see `upstream::cancel`).
    Cancel { client: Stream, key: CancelKey },
    /// The client left or sent something invalid (already answered).
    Closed,
}

/// Reads startup packets until a StartupMessage or CancelRequest arrives, by `deadline` (the
/// session's `auth_timeout` after accept); a client that takes longer is closed.
pub async fn open(client: Stream, tls: Option<&TlsAcceptor>, deadline: Instant) -> Opening {
    match tokio::time::timeout_at(deadline, negotiate(client, tls)).await {
        Ok(opening) => opening,
        Err(_) => Opening::Closed,
    }
}

/// `client` is a fresh TCP or Unix socket; only TCP is offered TLS (over a Unix socket the
/// answer to SSLRequest is 'N', as PostgreSQL's).
async fn negotiate(mut client: Stream, tls: Option<&TlsAcceptor>) -> Opening {
    // PostgreSQL answers each encryption request once; a repeat is a protocol violation.
    let mut asked = Asked::default();
    loop {
        let packet = match read_packet(&mut client).await {
            Ok(Some(packet)) => packet,
            Ok(None) => return Opening::Closed,
            Err(message) => {
                fail(&mut client, sqlstate::PROTOCOL_VIOLATION, &message).await;
                return Opening::Closed;
            }
        };
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest if !asked.first(&packet) => {
                let message = "encryption was already negotiated on this connection";
                fail(&mut client, sqlstate::PROTOCOL_VIOLATION, message).await;
                return Opening::Closed;
            }
            StartupPacket::SslRequest => {
                let acceptor = match (&client, tls) {
                    (Stream::Plain(_), Some(acceptor)) => acceptor,
                    _ => {
                        if client.write_all(&[ssl::REFUSED]).await.is_err() {
                            return Opening::Closed;
                        }
                        continue;
                    }
                };
                let Stream::Plain(mut tcp) = client else {
                    return Opening::Closed;
                };
                if tcp.write_all(&[ssl::ACCEPTED]).await.is_err() {
                    return Opening::Closed;
                }
                match acceptor.accept(tcp).await {
                    Ok(stream) => client = Stream::ClientTls(Box::new(stream)),
                    Err(e) => {
                        tracing::debug!(error = %e, "client TLS handshake failed");
                        return Opening::Closed;
                    }
                }
            }
            StartupPacket::GssEncRequest => {
                if client.write_all(&[ssl::REFUSED]).await.is_err() {
                    return Opening::Closed;
                }
            }
            StartupPacket::Cancel(key) => return Opening::Cancel { client, key },
            StartupPacket::Startup(startup) => {
                if startup
                    .param("replication")
                    .is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0"))
                {
                    fail(
                        &mut client,
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "pgward does not proxy replication connections; connect to PostgreSQL directly",
                    )
                    .await;
                    return Opening::Closed;
                }
                return Opening::Session { client, startup };
            }
        }
    }
}

/// Which encryption requests a connection has made before its startup packet.
#[derive(Default)]
struct Asked {
    ssl: bool,
    gss: bool,
}

impl Asked {
    /// Records `packet`; false when it repeats a request already answered.
    fn first(&mut self, packet: &StartupPacket) -> bool {
        let seen = match packet {
            StartupPacket::SslRequest => &mut self.ssl,
            StartupPacket::GssEncRequest => &mut self.gss,
            _ => return true,
        };
        !std::mem::replace(seen, true)
    }
}

/// Reads one length-prefixed startup packet; `Ok(None)` when the client closed first.
async fn read_packet(client: &mut Stream) -> Result<Option<StartupPacket>, String> {
    let mut len = [0u8; 4];
    match client.read_exact(&mut len).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    // body_len is at most MAX_STARTUP_PACKET (10,000 bytes), checked before allocating.
    let body_len = startup::body_len(len).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; body_len];
    if client.read_exact(&mut body).await.is_err() {
        return Ok(None);
    }
    startup::decode(&body).map(Some).map_err(|e| e.to_string())
}

/// Sends a FATAL error and closes; used before a session exists.
pub async fn fail(client: &mut Stream, code: &str, message: &str) {
    let mut out = Vec::new();
    Report::fatal(code, message).write_error(&mut out);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

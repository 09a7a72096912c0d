//! The accept loop: one task per client connection, a shutdown signal every session watches, and
//! the graceful stop (stop accepting, let busy sessions finish within shutdown_timeout, close the
//! rest). Connections are capped here, at accept: one over the cap is answered 53300 and closed
//! at once, without a task or a buffer. Clients come over TCP and, when configured, over a
//! Unix-domain socket (`server.unix_socket_dir`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Handles;
use super::session::serve_connection;
use crate::net::Stream;
use crate::protocol::build::{Report, TOO_MANY_CLIENTS};
use crate::protocol::sqlstate;
use crate::sessions::Peer;

/// The sockets clients connect to: TCP, and optionally a Unix-domain socket.
pub struct Listeners {
    pub tcp: TcpListener,
    #[cfg(unix)]
    pub unix: Option<tokio::net::UnixListener>,
}

impl Listeners {
    /// The next client on either socket.
    async fn accept(&self) -> std::io::Result<(Stream, Peer)> {
        #[cfg(unix)]
        if let Some(unix) = &self.unix {
            return tokio::select! {
                tcp = self.tcp.accept() => tcp.map(|(s, peer)| (Stream::Plain(s), Peer::Tcp(peer))),
                local = unix.accept() => local.map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
            };
        }
        let (tcp, peer) = self.tcp.accept().await?;
        Ok((Stream::Plain(tcp), Peer::Tcp(peer)))
    }
}

/// Answers a connection over the cap without waiting for its startup packet: libpq shows an
/// ErrorResponse that arrives first as the reason the connection failed.
fn refuse(app: &Handles, client: Stream) {
    app.stats
        .proxy()
        .client_connections_rejected
        .fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::new();
    Report::fatal(sqlstate::TOO_MANY_CONNECTIONS, TOO_MANY_CLIENTS).write_error(&mut out);
    // Best effort and never waiting: a fresh socket's send buffer takes these few bytes.
    match &client {
        Stream::Plain(tcp) => {
            let _ = tcp.try_write(&out);
        }
        #[cfg(unix)]
        Stream::Unix(unix) => {
            let _ = unix.try_write(&out);
        }
        Stream::ClientTls(_) | Stream::UpstreamTls(_) => {}
    }
}

/// Accepts clients until `shutdown` turns true, then drains the sessions.
pub async fn serve(app: Arc<Handles>, listener: Listeners, mut shutdown: watch::Receiver<bool>) {
    let next_id = AtomicU64::new(1);
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => match app.admit_connection() {
                    Some(slot) => {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        sessions.spawn(serve_connection(
                            app.clone(),
                            client,
                            peer,
                            id,
                            shutdown.clone(),
                            slot,
                        ));
                    }
                    None => refuse(&app, client),
                },
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    let timeout = app.settings.shutdown_timeout.0;
    tracing::info!(
        sessions = sessions.len(),
        ?timeout,
        "stopped accepting; waiting for sessions"
    );
    let drained = tokio::time::timeout(timeout, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "shutdown_timeout passed; closing remaining sessions"
        );
        sessions.shutdown().await;
    }
}

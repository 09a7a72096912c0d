//! The admin endpoint's own accept loop (instead of `axum::serve`, which has no header timeout
//! or connection cap): at most `admin.max_connections` sockets at once, refused at accept
//! beyond that; each request header must arrive within `admin.header_timeout`, which also ends
//! an idle keep-alive connection, and an answer the client stops reading for as long ends the
//! connection too (`stall`). On shutdown, listening stops, connections finish their
//! current request and close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::stall::StallLimited;

/// What a socket past the cap gets before it is closed (written without waiting).
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 62\r\nConnection: close\r\n\r\n{\"error\":\"too many admin connections (admin.max_connections)\"}";

/// How the loop serves connections.
pub(super) struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Accepts and serves until `shutdown` turns true (or its sender is gone).
pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (closing, closed) = watch::channel(false);
    while !*shutdown.borrow() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let connection = serve_one(
                            stream,
                            router.clone(),
                            http.clone(),
                            limits.header_timeout,
                            closed.clone(),
                        );
                        tokio::spawn(async move {
                            connection.await;
                            drop(slot);
                        });
                    }
                    Err(_) => refuse(stream),
                },
                Err(e) => {
                    // Out of file descriptors and the like: give the system a moment.
                    tracing::warn!(error = %e, "admin endpoint cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// Serves one connection; on shutdown it finishes the request in progress and closes.
async fn serve_one(
    stream: TcpStream,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    write_stall: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let stream = StallLimited::new(stream, write_stall);
    let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let mut asked = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    // Header timeouts, resets, malformed requests: the client's problem.
                    tracing::debug!(error = %e, "admin connection ended");
                }
                return;
            }
            changed = closing.changed(), if !asked => {
                asked = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A socket past the cap: a 503 if the kernel takes it at once, then closed.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
    tracing::debug!("admin connection refused: admin.max_connections reached");
}

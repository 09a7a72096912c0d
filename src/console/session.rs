//! One console session: login, the parameters psql expects, then one command per simple Query
//! until the client leaves or pgward shuts down. The extended protocol is refused (0A000) and
//! its messages skipped up to Sync, as PostgreSQL skips a failed batch, so the session goes on.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Console, auth, commands};
use crate::net::Stream;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::build::{self, Report};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::frontend::query;
use crate::protocol::sqlstate;
use crate::protocol::startup::StartupMessage;
use crate::protocol::tag::frontend as tag;

/// Largest message a console client may send: commands are short.
const MAX_MESSAGE: usize = 64 * 1024;

/// A console client's socket with its pending output.
pub(super) struct Messages {
    pub client: Stream,
    out: Vec<u8>,
}

impl Messages {
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.client.write_all(&self.out).await?;
        self.out.clear();
        self.client.flush().await
    }

    /// The next message (tag, body); `Ok(None)` when the client closed.
    pub async fn read(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let mut head = [0u8; HEADER_LEN];
        if self.client.read_exact(&mut head).await.is_err() {
            return Ok(None);
        }
        let header = match frame::parse_header(&head, MAX_MESSAGE) {
            Ok(Some(header)) => header,
            Ok(None) => return Err("truncated message header".into()),
            Err(e) => return Err(e.to_string()),
        };
        let mut body = vec![0u8; header.body_len];
        if self.client.read_exact(&mut body).await.is_err() {
            return Ok(None);
        }
        Ok(Some((header.tag, body)))
    }
}

/// Sends a FATAL error and closes the connection.
pub(super) async fn fail(client: &mut Stream, code: &str, message: &str) {
    let mut out = Vec::new();
    Report::fatal(code, message).write_error(&mut out);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

/// Serves a console client from its StartupMessage on; the login must end by `deadline`.
pub async fn serve(
    console: &Console,
    client: Stream,
    startup: &StartupMessage,
    deadline: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut io = Messages {
        client,
        out: Vec::new(),
    };
    if !auth::login(console, &mut io, startup.user(), deadline).await {
        return;
    }
    tracing::info!("console session opened");
    greet(io.out(), startup.param("application_name").unwrap_or(""));
    let mut skipping = false;
    loop {
        if io.flush().await.is_err() {
            return;
        }
        let message = tokio::select! {
            message = io.read() => message,
            // The guard wait_for returns is not Send: dropped inside.
            () = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                let message = "terminating connection because pgward is shutting down";
                fail(&mut io.client, sqlstate::ADMIN_SHUTDOWN, message).await;
                return;
            }
        };
        let (kind, body) = match message {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(e) => {
                fail(&mut io.client, sqlstate::PROTOCOL_VIOLATION, &e).await;
                return;
            }
        };
        if !answer(console, kind, &body, io.out(), &mut skipping) {
            let _ = io.flush().await;
            return;
        }
    }
}

/// What psql and drivers read at login: the parameters PostgreSQL reports, then ready.
fn greet(out: &mut Vec<u8>, application_name: &str) {
    let version = concat!(env!("CARGO_PKG_VERSION"), " (pgward console)");
    for (name, value) in [
        ("server_version", version),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", application_name),
    ] {
        build::parameter_status(out, name, value);
    }
    build::ready_for_query(out, TransactionStatus::Idle);
}

/// Answers one client message; false when the session ends (Terminate, bad message).
fn answer(
    console: &Console,
    kind: u8,
    body: &[u8],
    out: &mut Vec<u8>,
    skipping: &mut bool,
) -> bool {
    match kind {
        tag::QUERY => {
            match query(body).map(std::str::from_utf8) {
                Some(Ok(sql)) => commands::run(console, sql, out),
                _ => Report::error(sqlstate::PROTOCOL_VIOLATION, "malformed Query message")
                    .write_error(out),
            }
            build::ready_for_query(out, TransactionStatus::Idle);
        }
        tag::TERMINATE => return false,
        tag::SYNC => {
            *skipping = false;
            build::ready_for_query(out, TransactionStatus::Idle);
        }
        tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => {
            if !std::mem::replace(skipping, true) {
                refuse_extended(out);
            }
        }
        tag::FUNCTION_CALL => {
            refuse_extended(out);
            build::ready_for_query(out, TransactionStatus::Idle);
        }
        // Copy messages outside a copy are ignored, as PostgreSQL ignores them.
        tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {}
        _ => {
            Report::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "invalid frontend message type",
            )
            .write_error(out);
            return false;
        }
    }
    true
}

fn refuse_extended(out: &mut Vec<u8>) {
    Report::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "the pgward admin console answers only simple queries",
    )
    .with_hint("use psql, or your driver's simple query mode (e.g. simple_query)")
    .write_error(out);
}

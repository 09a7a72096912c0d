//! One PostgreSQL server connection as the pool holds it: the stream, the BackendKeyData a
//! cancel needs, the ParameterStatus values the server reported, and what the pool does with
//! it between clients — check that it is still open (one non-blocking `MSG_PEEK`), run the
//! reset query, say Terminate. [`PgConnector`] opens them ([`login`] within
//! `server_login_timeout`). Reads are whole messages under a size cap, the buffer growing
//! only as bytes arrive.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connector::{Connection, Connector};
use super::login::{LoginError, LoginSpec, login, set_parameter};
use super::prepared::PreparedSet;
use crate::net::Stream;
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::build;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::startup::CancelKey;
use crate::protocol::tag::backend as tag;
use crate::upstream::Upstream;

/// Largest message read while the reset query runs (a reset that returns rows is allowed,
/// each row under this).
const RESET_MAX_MESSAGE: usize = 1 << 20;

/// Why a message could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(io::Error),
    Frame(String),
}

/// Reads whole messages into one reused buffer.
pub(super) struct Frames {
    max: usize,
    body: Vec<u8>,
}

impl Frames {
    pub(super) fn new(max: usize) -> Frames {
        Frames {
            max,
            body: Vec::new(),
        }
    }

    /// Reads one message and returns its tag; its body is then [`Frames::body`].
    pub(super) async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<u8, ReadError> {
        let mut head = [0u8; HEADER_LEN];
        r.read_exact(&mut head).await.map_err(ReadError::Io)?;
        let header = match frame::parse_header(&head, self.max) {
            Ok(Some(header)) => header,
            Ok(None) => return Err(ReadError::Frame("short header".into())),
            Err(e) => return Err(ReadError::Frame(e.to_string())),
        };
        self.body.clear();
        let want = u64::try_from(header.body_len).unwrap_or(u64::MAX);
        // read_to_end grows the buffer as bytes arrive, never to the declared length at once.
        let got = (&mut *r)
            .take(want)
            .read_to_end(&mut self.body)
            .await
            .map_err(ReadError::Io)?;
        if got < header.body_len {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(header.tag)
    }

    pub(super) fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Writes `bytes` and flushes them (a TLS stream holds records until flushed).
pub(super) async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// A logged-in server connection, at a message boundary whenever the pool holds it.
pub struct PgConnection {
    stream: Stream,
    key: CancelKey,
    parameters: Vec<(String, String)>,
    /// The statements pgward prepared on it (transaction mode).
    pub prepared: PreparedSet,
}

impl PgConnection {
    pub(super) fn new(stream: Stream, key: CancelKey, parameters: Vec<(String, String)>) -> Self {
        PgConnection {
            stream,
            key,
            parameters,
            prepared: PreparedSet::default(),
        }
    }

    /// The stream to relay on; hand it back at a message boundary, after ReadyForQuery.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The server's BackendKeyData: where a client's cancel goes while it holds this server.
    pub fn backend_key(&self) -> &CancelKey {
        &self.key
    }

    /// Every ParameterStatus the server reported, latest value per name, in first-seen order.
    pub fn parameters(&self) -> &[(String, String)] {
        &self.parameters
    }

    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Records a ParameterStatus the relay saw on this connection (a client's `SET`).
    pub fn set_parameter(&mut self, name: &[u8], value: &[u8]) {
        set_parameter(&mut self.parameters, name, value);
    }

    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        match &self.stream {
            Stream::Plain(tcp) => Some(tcp),
            Stream::UpstreamTls(tls) => Some(tls.get_ref().0),
            Stream::ClientTls(_) => None,
            // A Unix socket to a local PostgreSQL: no peek; a dead one fails at first use.
            #[cfg(unix)]
            Stream::Unix(_) => None,
        }
    }
}

/// Why the reset query did not leave a clean, idle connection.
#[derive(Debug, Error)]
pub enum ResetError {
    #[error("connection lost during the reset query: {0}")]
    Io(io::Error),
    #[error("the reset query failed: {message} (SQLSTATE {code})")]
    Failed { code: String, message: String },
    #[error("after the reset query the connection is not idle")]
    NotIdle,
    #[error("invalid message during the reset query: {0}")]
    Protocol(String),
    #[error("the reset query did not finish within {0:?}")]
    Timeout(Duration),
}

impl Connection for PgConnection {
    fn alive(&self) -> bool {
        self.tcp().is_none_or(peer_open)
    }

    async fn reset(&mut self, sql: &str) -> Result<(), ResetError> {
        let mut out = Vec::new();
        // pgward's statement names must be gone after a reset, or the next Parse of one would
        // fail with 42P05: DISCARD ALL drops them, any other reset query gets DEALLOCATE ALL
        // in front (not in front of DISCARD ALL, which refuses to run in a multi-statement
        // query).
        let discards = sql
            .trim()
            .trim_end_matches(';')
            .eq_ignore_ascii_case("DISCARD ALL");
        let built = if discards || self.prepared.is_empty() {
            build::query(&mut out, sql)
        } else {
            build::query(&mut out, &format!("DEALLOCATE ALL; {sql}"))
        };
        built.ok_or(ResetError::Protocol("reset query too long".into()))?;
        self.prepared.clear();
        send(&mut self.stream, &out).await.map_err(ResetError::Io)?;
        let mut frames = Frames::new(RESET_MAX_MESSAGE);
        let mut failed = None;
        let status = loop {
            let kind = frames.read(&mut self.stream).await.map_err(|e| match e {
                ReadError::Io(e) => ResetError::Io(e),
                ReadError::Frame(m) => ResetError::Protocol(m),
            })?;
            let body = frames.body();
            match kind {
                tag::ERROR_RESPONSE => {
                    let code = backend::error_fields(body).code.unwrap_or_default();
                    let message = backend::error_message(body).unwrap_or_default();
                    failed = Some(ResetError::Failed {
                        code: String::from_utf8_lossy(&code).into_owned(),
                        message: String::from_utf8_lossy(message).into_owned(),
                    });
                }
                // DISCARD ALL / RESET ALL report the parameters they put back.
                tag::PARAMETER_STATUS => {
                    if let Some((name, value)) = backend::parameter_status(body) {
                        set_parameter(&mut self.parameters, name, value);
                    }
                }
                tag::READY_FOR_QUERY => break backend::ready_status(body),
                _ => {}
            }
        };
        if let Some(e) = failed {
            return Err(e);
        }
        if status != Some(TransactionStatus::Idle) {
            return Err(ResetError::NotIdle);
        }
        Ok(())
    }

    async fn close(mut self) {
        let mut out = Vec::new();
        build::terminate(&mut out);
        if send(&mut self.stream, &out).await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }
}

/// Whether the server's end of `tcp` is still open with nothing unread: a server that ended
/// the connection (EOF, reset) or said anything while idle (a FATAL before it closes, a
/// notification nobody will read) is not handed to a client. The kernel is asked directly
/// (tokio's readiness may not have seen the event yet).
#[cfg(unix)]
fn peer_open(tcp: &tokio::net::TcpStream) -> bool {
    use rustix::net::{RecvFlags, recv};
    let mut byte = [0u8; 1];
    match recv(tcp, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok(_) => false,
        Err(e) => e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR,
    }
}

#[cfg(not(unix))]
fn peer_open(_tcp: &tokio::net::TcpStream) -> bool {
    true
}

/// Opens PostgreSQL server connections for one pool: one login as the pool's user to its
/// database, bounded by `server_login_timeout`.
pub struct PgConnector {
    upstream: Arc<Upstream>,
    spec: LoginSpec,
    timeout: Duration,
}

impl PgConnector {
    pub fn new(upstream: Arc<Upstream>, spec: LoginSpec, timeout: Duration) -> PgConnector {
        PgConnector {
            upstream,
            spec,
            timeout,
        }
    }
}

impl Connector for PgConnector {
    type Conn = PgConnection;

    async fn open(&self) -> Result<PgConnection, LoginError> {
        tokio::time::timeout(self.timeout, login(&self.upstream, &self.spec))
            .await
            .map_err(|_| LoginError::Timeout {
                address: self.upstream.address().to_owned(),
                timeout: self.timeout,
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_bounded() {
        let mut bytes: &[u8] = b"Z\0\0\0\x05IS\0\0\0\x08ab";
        let mut frames = Frames::new(64);
        assert_eq!(frames.read(&mut bytes).await.unwrap(), b'Z');
        assert_eq!(frames.body(), b"I");
        // Declares 4 body bytes, two arrive: an early EOF, not a short frame.
        assert!(matches!(
            frames.read(&mut bytes).await,
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
        let mut huge: &[u8] = b"D\x7f\xff\xff\xff";
        assert!(matches!(
            frames.read(&mut huge).await,
            Err(ReadError::Frame(m)) if m.contains("over the limit")
        ));
    }

    #[tokio::test]
    async fn an_idle_peer_that_closed_or_spoke_is_not_open() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        assert!(peer_open(&client));
        server.write_all(b"N").await.unwrap();
        server.flush().await.unwrap();
        let spoke = async {
            while peer_open(&client) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), spoke)
            .await
            .unwrap();
        let client2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server2, _) = listener.accept().await.unwrap();
        drop(server2);
        let closed = async {
            while peer_open(&client2) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .unwrap();
    }
}

//! The relay at the heart of a session: one task polls both sockets, so the two directions never
//! wait on each other and no message crosses threads. Bytes are forwarded as they were received;
//! only frame headers are parsed, and only the frames the pipeline or the handshake must see are
//! decoded. Frames nobody inspects (DataRow, CopyData) are streamed through even before they are
//! complete, so a 1 GB value or a million-row result never sits in pgward's memory.
//!
//! Memory follows the bytes that arrived, never what a header declares: a frame that must be
//! inspected is collected in reads of at most [`GROW_STEP`], and before authentication only
//! messages of startup size are accepted. Each direction has backpressure: pgward stops reading
//! a side while too much waits for the other, including the replies pgward makes itself
//! (cache hits, rejects), and stops reading a client that has more statements in flight than
//! [`MAX_QUEUED`]. A panic while relaying ends this session with an error to its client, never
//! the process. In transaction mode ([`super::pooled`]) the upstream leg holds a pooled server
//! connection only from a transaction's first message to its end.

use std::future::poll_fn;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::buffer::{RecvBuf, SendBuf};
use super::leg::{Io, KEEP_CAPACITY, Leg};
use super::pooled::{Pooling, Verdict};
use crate::fingerprint::FingerprintId;
use crate::net::Stream;
use crate::pipeline::{ClientAction, Expiry, Gate, Pipeline};
use crate::pool::{PoolError, Release};
use crate::protocol::backend::TransactionStatus;
use crate::protocol::build::Report;
use crate::protocol::frame::{self, FrameHeader};
use crate::protocol::startup::CancelKey;
use crate::protocol::tag::{backend as server_tag, frontend as client_tag};
use crate::protocol::{backend, build};
use crate::sessions::State;

/// Stop reading from one side while this much is still queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// Largest client message before authentication: a password or SASL message (PostgreSQL's
/// own limit for authentication tokens is 65,535 bytes).
const PRE_AUTH_MAX_MESSAGE: usize = 65_535 + frame::HEADER_LEN;
/// Statements and replies a client may have in flight before pgward stops reading from it
/// (each costs a queue entry; a pipelining client waits, as it would on PostgreSQL's socket).
const MAX_QUEUED: usize = 4_096;
/// How long statements already sent may run after the client closed its side of the socket.
/// PostgreSQL answers what it read before the EOF, and a client that half-closes after its last
/// query reads those answers; a client that vanished has its query cancelled after this, so a
/// dropped connection never leaves a heavy query running for long.
const EOF_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a relay stopped.
#[derive(Debug)]
pub enum Ending {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client's connection closed or failed.
    ClientGone,
    /// The client closed its side and every answer to what it sent before has been written.
    ClientClosed,
    /// The upstream's connection closed or failed.
    UpstreamGone(Option<io::Error>),
    /// The client sent something that is not the protocol.
    ClientProtocol(String),
    /// The upstream sent something that is not the protocol.
    UpstreamProtocol(String),
    /// pgward is shutting down and the session was idle.
    Shutdown,
    /// A budget cancel had no effect within cancel_grace.
    CancelIgnored,
    /// pgward's own code panicked while relaying (a bug): the session ends with XX000.
    Panicked,
    /// The login did not reach ReadyForQuery within `auth_timeout`.
    AuthTimeout,
    /// Ops ended the session (`KILL`, `POST /sessions/{id}/terminate`).
    Killed,
    /// Transaction mode: no server connection could be had for the client's statement.
    NoServer(PoolError),
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Startup and authentication, until the first ReadyForQuery: only messages of startup
    /// size are accepted from the client.
    Authenticating,
    /// Statements flow.
    Ready,
    /// pgward is shutting down: statements still flow, and the session ends (Shutdown) the
    /// moment it is idle.
    Draining,
    /// The client sent Terminate and it went upstream. As with PostgreSQL itself, what is
    /// running finishes and its answers still reach the client; the session ends when the
    /// upstream closes.
    Terminating,
    /// The client closed its side while statements were in flight: nothing more is read from
    /// it, their answers are still written, and at `deadline` the session ends as if the
    /// client had vanished (its query is cancelled).
    ClientClosed { deadline: Instant },
}

/// What the relay asks of the session around it.
pub trait SessionHooks {
    /// The upstream's BackendKeyData arrived; returns the key to give the client instead.
    fn backend_key(&mut self, upstream: CancelKey) -> CancelKey;
    /// A statement's time budget passed: cancel what the upstream is running. The returned
    /// receiver resolves (a value or a dropped sender) once PostgreSQL has closed the cancel
    /// connection, i.e. has signalled its backend.
    fn cancel_upstream(&mut self) -> Option<oneshot::Receiver<()>>;
    /// The session's state or running statement changed (published for ops; called when the
    /// relay is about to wait, only on a change).
    fn activity(&mut self, _activity: Activity) {}
}

/// What a session is doing, as the registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub state: State,
    pub running: Option<(FingerprintId, Instant)>,
}

/// Carries messages between a client and its upstream connection.
pub struct Relay {
    client: Leg,
    upstream: Leg,
    to_client: SendBuf,
    to_upstream: SendBuf,
    pub pipeline: Pipeline,
    max_message: usize,
    phase: Phase,
    /// A FATAL error already reached the client.
    pub sent_fatal: bool,
    /// Complete client frames wait in the receive buffer because the client is not reading
    /// what it already asked for; they are taken up once it does.
    client_backlog: bool,
    /// While set, client frames wait: the one at the front needs a concurrency slot.
    gate: Option<Gate>,
    /// pgward's own CancelRequest has not been handled by PostgreSQL yet. Nothing more goes
    /// upstream until it has: a cancel that lands after its statement ended would cancel the
    /// next one (PostgreSQL signals whatever the backend runs when the request arrives).
    cancel_in_flight: Option<oneshot::Receiver<()>>,
    /// Fires at the pipeline's next deadline (budget or cancel grace).
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// What was last published through [`SessionHooks::activity`].
    published: Activity,
    /// Transaction mode: the server connection is held per transaction.
    pooled: Option<Box<Pooling>>,
}

impl Relay {
    pub fn new(client: Stream, upstream: Stream, pipeline: Pipeline, max_message: usize) -> Self {
        Self::build(client, Io::Stream(upstream), pipeline, max_message)
    }

    /// A transaction-mode relay for a client pgward logged in itself: statements flow at once,
    /// each transaction on a server connection of `pooling`'s pool.
    pub fn pooled(
        client: Stream,
        pooling: Pooling,
        pipeline: Pipeline,
        max_message: usize,
    ) -> Self {
        let mut relay = Self::build(client, Io::Detached, pipeline, max_message);
        relay.phase = Phase::Ready;
        relay.pooled = Some(Box::new(pooling));
        relay
    }

    fn build(client: Stream, upstream: Io, pipeline: Pipeline, max_message: usize) -> Self {
        Relay {
            client: Leg::new(Io::Stream(client)),
            upstream: Leg::new(upstream),
            to_client: SendBuf::default(),
            to_upstream: SendBuf::default(),
            pipeline,
            max_message,
            phase: Phase::Authenticating,
            sent_fatal: false,
            client_backlog: false,
            gate: None,
            cancel_in_flight: None,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            timer_at: None,
            published: Activity {
                state: State::Starting,
                running: None,
            },
            pooled: None,
        }
    }

    /// Frames for the upstream: as they are, or (transaction mode) translated for the held
    /// server, or kept until one is held.
    fn push_upstream(
        pooled: &mut Option<Box<Pooling>>,
        upstream: &mut Leg,
        to_upstream: &mut SendBuf,
        bytes: &[u8],
    ) {
        match pooled {
            None => to_upstream.push(bytes),
            Some(pooling) => pooling.feed(bytes, upstream.io.server(), to_upstream),
        }
    }

    /// Bytes bound upstream not yet written, including those waiting for a server.
    fn upstream_backlog(&self) -> usize {
        let pending = self.pooled.as_ref().map_or(0, |p| p.pending_len());
        self.to_upstream.len() + pending
    }

    /// At the session's end: a held server goes back when it is between transactions and
    /// nothing is owed, else it is closed (PostgreSQL rolls back what it was doing).
    pub fn give_back_server(&mut self) {
        let Some(pooling) = &mut self.pooled else {
            return;
        };
        let Io::Server(server) = std::mem::replace(&mut self.upstream.io, Io::Detached) else {
            return;
        };
        let clean = pooling.settled()
            && !self.pipeline.busy()
            && self.pipeline.transaction() == TransactionStatus::Idle
            && self.to_upstream.is_empty()
            && self.upstream.recv.is_empty()
            && self.upstream.streaming_left == 0
            && self.cancel_in_flight.is_none();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match pooling.poll_detach(&mut cx) {
            Poll::Ready(how) if clean => server.release(how),
            _ => {
                pooling.lost();
                server.release(Release::Broken);
            }
        }
    }

    /// Transaction mode: attaches a server once a checkout for waiting frames is done.
    fn poll_checkout(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Ending>> {
        let Some(pooling) = &mut self.pooled else {
            return Poll::Pending;
        };
        if !matches!(self.upstream.io, Io::Detached) {
            return Poll::Pending;
        }
        match std::task::ready!(pooling.poll_checkout(cx)) {
            Ok(mut server) => {
                pooling.attach(&mut server, &mut self.to_upstream);
                self.upstream.io = Io::Server(server);
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(Ending::NoServer(e))),
        }
    }

    /// Transaction mode: gives the server back once the transaction is over and nothing of
    /// it is still on the way in either direction.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(pooling) = &mut self.pooled else {
            return false;
        };
        let between_transactions = matches!(self.upstream.io, Io::Server(_))
            && pooling.settled()
            && !self.pipeline.busy()
            && self.pipeline.transaction() == TransactionStatus::Idle
            && self.to_upstream.is_empty()
            && self.upstream.recv.is_empty()
            && self.upstream.streaming_left == 0
            && self.client.streaming_left == 0
            && self.cancel_in_flight.is_none();
        if !between_transactions {
            return false;
        }
        let Poll::Ready(how) = pooling.poll_detach(cx) else {
            return false;
        };
        if let Io::Server(server) = std::mem::replace(&mut self.upstream.io, Io::Detached) {
            server.release(how);
        }
        true
    }

    /// The session's activity now.
    fn activity(&self) -> Activity {
        let state = match (self.phase, self.pipeline.busy()) {
            (Phase::Authenticating, _) => State::Starting,
            (_, true) => State::Active,
            _ => match self.pipeline.transaction() {
                TransactionStatus::Idle => State::Idle,
                TransactionStatus::InTransaction => State::IdleInTransaction,
                TransactionStatus::Failed => State::IdleInFailedTransaction,
            },
        };
        Activity {
            state,
            running: self.pipeline.running(),
        }
    }

    /// Queues bytes for the upstream (the StartupMessage, a Terminate).
    pub fn send_upstream(&mut self, bytes: &[u8]) {
        self.to_upstream.push(bytes);
    }

    /// Queues a FATAL error for the client, the last thing it is sent.
    pub fn send_fatal(&mut self, code: &str, message: &str) {
        Report::fatal(code, message).write_error(self.to_client.writer());
        self.sent_fatal = true;
    }

    /// Queues a message pgward itself sends the upstream.
    pub fn upstream_writer(&mut self) -> &mut Vec<u8> {
        self.to_upstream.writer()
    }

    /// Queues a message pgward itself sends the client.
    pub fn client_writer(&mut self) -> &mut Vec<u8> {
        self.to_client.writer()
    }

    /// Asks the relay to end at the next moment the session is idle. A session still logging
    /// in has nothing to finish: it ends now (the returned ending).
    pub fn drain(&mut self) -> Option<Ending> {
        match self.phase {
            Phase::Authenticating => return Some(Ending::Shutdown),
            Phase::Ready => self.phase = Phase::Draining,
            // Already ending as soon as what runs is answered.
            Phase::Draining | Phase::Terminating | Phase::ClientClosed { .. } => {}
        }
        None
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Relays until one side ends or, once draining, until idle.
    pub async fn run(&mut self, hooks: &mut (dyn SessionHooks + Send)) -> Ending {
        poll_fn(|cx| {
            // The relay is not used again after a panic, only asked to flush a FATAL error.
            catch_unwind(AssertUnwindSafe(|| self.poll_relay(cx, hooks)))
                .unwrap_or(Poll::Ready(Ending::Panicked))
        })
        .await
    }

    /// Whether client frames are taken now: not after Terminate, not while a held frame waits
    /// at a gate, and not while either direction is backed up.
    fn reads_client(&self) -> bool {
        self.phase != Phase::Terminating
            && self.gate.is_none()
            && self.upstream_backlog() < HIGH_WATER
            && !self.client_held()
    }

    /// The client asked for more than it reads: leave its next frames unread for now.
    fn client_held(&self) -> bool {
        self.to_client.len() >= HIGH_WATER || self.pipeline.queued() >= MAX_QUEUED
    }

    /// Writes whatever is queued for each side, giving up quietly on errors.
    pub async fn flush(&mut self) {
        let _ = poll_fn(|cx| {
            let client = self.client.poll_send(&mut self.to_client, cx);
            let upstream = self.upstream.poll_send(&mut self.to_upstream, cx);
            // A leg without a socket (no server held) has nothing to flush to.
            let done = |r: &io::Result<bool>, buf: &SendBuf, leg: &Leg| {
                r.is_err() || (buf.is_empty() && !leg.needs_flush) || matches!(leg.io, Io::Detached)
            };
            if done(&client, &self.to_client, &self.client)
                && done(&upstream, &self.to_upstream, &self.upstream)
            {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Closes both sockets' write sides.
    pub async fn shutdown(&mut self) {
        if let Some(client) = self.client.io.stream() {
            let _ = tokio::io::AsyncWriteExt::shutdown(client).await;
        }
        // A pooled server is given back, never shut down.
        if let Io::Stream(upstream) = &mut self.upstream.io {
            let _ = tokio::io::AsyncWriteExt::shutdown(upstream).await;
        }
    }

    /// Whether statements the client already sent still owe it answers (at its EOF).
    fn owes_client(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::Draining)
            && (self.pipeline.busy() || self.client_backlog || !self.to_client.is_empty())
    }

    fn idle(&self) -> bool {
        !self.pipeline.busy()
            && self.client.recv.is_empty()
            && self.upstream_backlog() == 0
            && self.to_client.is_empty()
            && self.client.streaming_left == 0
            && self.upstream.streaming_left == 0
    }

    fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        hooks: &mut (dyn SessionHooks + Send),
    ) -> Poll<Ending> {
        loop {
            if let Some(done) = &mut self.cancel_in_flight
                && Pin::new(done).poll(cx).is_ready()
            {
                self.cancel_in_flight = None;
            }
            let mut progressed = match self.poll_checkout(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(ending)) => return Poll::Ready(ending),
                Poll::Pending => false,
            };
            progressed |= match self.cancel_in_flight {
                Some(_) => false,
                None => match self.upstream.poll_send(&mut self.to_upstream, cx) {
                    Ok(p) => p,
                    Err(e) => return Poll::Ready(Ending::UpstreamGone(Some(e))),
                },
            };
            match self.client.poll_send(&mut self.to_client, cx) {
                Ok(p) => progressed |= p,
                Err(_) => return Poll::Ready(Ending::ClientGone),
            }
            if self.phase == Phase::Draining && self.idle() {
                return Poll::Ready(Ending::Shutdown);
            }
            if matches!(self.phase, Phase::ClientClosed { .. }) && self.idle() {
                return Poll::Ready(Ending::ClientClosed);
            }
            match self.poll_timer(cx, hooks) {
                Poll::Ready(Some(ending)) => return Poll::Ready(ending),
                Poll::Ready(None) => progressed = true,
                Poll::Pending => {}
            }
            if let Some(gate) = &mut self.gate
                && let Poll::Ready(permit) = gate.0.as_mut().poll(cx)
            {
                self.gate = None;
                self.pipeline.admit(permit);
                progressed = true;
                if let Err(ending) = self.process_client() {
                    return Poll::Ready(ending);
                }
            }
            if self.reads_client() && self.client_backlog {
                self.client_backlog = false;
                progressed = true;
                if let Err(ending) = self.process_client() {
                    return Poll::Ready(ending);
                }
            }
            if self.reads_client()
                && !self.client_backlog
                && !matches!(self.phase, Phase::ClientClosed { .. })
            {
                match self.client.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        if !self.owes_client() {
                            return Poll::Ready(Ending::ClientGone);
                        }
                        self.phase = Phase::ClientClosed {
                            deadline: Instant::now() + EOF_GRACE,
                        };
                        progressed = true;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Ending::ClientGone),
                    Poll::Ready(Ok(_)) => {
                        progressed = true;
                        if let Err(ending) = self.process_client() {
                            return Poll::Ready(ending);
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if self.to_client.len() < HIGH_WATER {
                match self.upstream.poll_read(cx) {
                    Poll::Ready(Ok(0)) if self.phase == Phase::Terminating => {
                        return Poll::Ready(Ending::ClientTerminated);
                    }
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ending::UpstreamGone(None)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Ending::UpstreamGone(Some(e))),
                    Poll::Ready(Ok(_)) => {
                        progressed = true;
                        if let Err(ending) = self.process_upstream(hooks) {
                            return Poll::Ready(ending);
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if self.poll_release(cx) {
                progressed = true;
            }
            if !progressed {
                let activity = self.activity();
                if activity != self.published {
                    self.published = activity;
                    hooks.activity(activity);
                }
                return Poll::Pending;
            }
        }
    }

    /// Keeps the timer on the pipeline's next deadline and acts when it passes.
    fn poll_timer(
        &mut self,
        cx: &mut Context<'_>,
        hooks: &mut (dyn SessionHooks + Send),
    ) -> Poll<Option<Ending>> {
        let eof_deadline = match self.phase {
            Phase::ClientClosed { deadline } => Some(deadline),
            _ => None,
        };
        let pipeline_at = self.pipeline.next_timer();
        let wanted = match (pipeline_at, eof_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if wanted != self.timer_at {
            self.timer_at = wanted;
            if let Some(at) = wanted {
                self.timer.as_mut().reset(at.into());
            }
        }
        if self.timer_at.is_none() || self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer_at = None;
        let now = Instant::now();
        if eof_deadline.is_some_and(|at| at <= now) {
            return Poll::Ready(Some(Ending::ClientGone));
        }
        if pipeline_at.is_none_or(|at| at > now) {
            return Poll::Ready(None);
        }
        match self.pipeline.on_timer(now) {
            Expiry::Cancel { grace_until } if grace_until <= now => {
                Poll::Ready(Some(Ending::CancelIgnored))
            }
            Expiry::Cancel { .. } => {
                self.cancel_in_flight = hooks.cancel_upstream();
                Poll::Ready(None)
            }
            Expiry::Nothing => Poll::Ready(None),
            Expiry::Answered(bytes) => {
                self.to_client.push(&bytes);
                Poll::Ready(None)
            }
        }
    }

    /// Moves every complete client frame into the upstream queue, via the pipeline.
    fn process_client(&mut self) -> Result<(), Ending> {
        let now = Instant::now();
        let max_message = match self.phase {
            Phase::Authenticating => PRE_AUTH_MAX_MESSAGE.min(self.max_message),
            Phase::Ready | Phase::Draining | Phase::Terminating | Phase::ClientClosed { .. } => {
                self.max_message
            }
        };
        loop {
            let avail = self.client.recv.filled();
            if avail.is_empty() {
                self.client.want = 0;
                break;
            }
            if self.phase == Phase::Terminating {
                // Nothing after Terminate is read, as PostgreSQL reads nothing after it.
                let n = avail.len();
                self.client.recv.consume(n);
                break;
            }
            if self.client.streaming_left == 0 && self.client_held() {
                self.client.want = 0;
                self.client_backlog = true;
                break;
            }
            if self.client.streaming_left > 0 {
                let n = self.client.streaming_left.min(avail.len());
                let (pooled, upstream, out) =
                    (&mut self.pooled, &mut self.upstream, &mut self.to_upstream);
                Self::push_upstream(pooled, upstream, out, &avail[..n]);
                self.client.recv.consume(n);
                self.client.streaming_left -= n;
                continue;
            }
            let header = match frame::parse_header(avail, max_message) {
                Ok(Some(header)) => header,
                Ok(None) => {
                    self.client.want = 0;
                    break;
                }
                Err(e) => return Err(Ending::ClientProtocol(e.to_string())),
            };
            if !frame::is_frontend_tag(header.tag) {
                return Err(Ending::ClientProtocol(
                    frame::FrameError::UnknownTag { tag: header.tag }.to_string(),
                ));
            }
            let frame_len = header.frame_len();
            if avail.len() < frame_len {
                if header.tag == client_tag::COPY_DATA {
                    // CopyData is never inspected: pass on what has arrived.
                    let (pooled, upstream, out) =
                        (&mut self.pooled, &mut self.upstream, &mut self.to_upstream);
                    Self::push_upstream(pooled, upstream, out, avail);
                    self.client.streaming_left = frame_len - avail.len();
                    let n = avail.len();
                    self.client.recv.consume(n);
                    continue;
                }
                self.client.want = frame_len - avail.len();
                break;
            }
            let frame = &avail[..frame_len];
            let action = match header.tag {
                // A shared server connection is not the client's to end.
                client_tag::TERMINATE if self.pooled.is_some() => {
                    return Err(Ending::ClientTerminated);
                }
                client_tag::TERMINATE => {
                    self.phase = Phase::Terminating;
                    ClientAction::Forward
                }
                client_tag::QUERY
                | client_tag::PARSE
                | client_tag::BIND
                | client_tag::DESCRIBE
                | client_tag::EXECUTE
                | client_tag::CLOSE
                | client_tag::SYNC
                | client_tag::FLUSH
                | client_tag::FUNCTION_CALL => {
                    self.pipeline
                        .on_client_frame(header.tag, &frame[frame::HEADER_LEN..], now)
                }
                _ => ClientAction::Forward,
            };
            // What the pipeline held back or must re-send goes first, whatever this frame does.
            let (pooled, upstream, out) =
                (&mut self.pooled, &mut self.upstream, &mut self.to_upstream);
            match pooled {
                None => self.pipeline.drain_outbound(out.writer()),
                Some(pooling) => {
                    let mut outbound = Vec::new();
                    self.pipeline.drain_outbound(&mut outbound);
                    pooling.feed(&outbound, upstream.io.server(), out);
                }
            }
            match action {
                ClientAction::Forward => Self::push_upstream(pooled, upstream, out, frame),
                ClientAction::Replace(bytes) => Self::push_upstream(pooled, upstream, out, &bytes),
                ClientAction::Drop => {}
                ClientAction::Wait(gate) => {
                    // The frame stays buffered and is offered again once the gate resolves.
                    self.gate = Some(gate);
                    break;
                }
            }
            self.pipeline.drain_replies(self.to_client.writer());
            self.client.recv.consume(frame_len);
        }
        self.client.recv.shrink_to(KEEP_CAPACITY);
        Ok(())
    }

    /// Moves every backend frame into the client queue, rewriting only the handshake's
    /// BackendKeyData and SASL offer.
    fn process_upstream(&mut self, hooks: &mut (dyn SessionHooks + Send)) -> Result<(), Ending> {
        // The buffer is moved out while its frames are inspected, so inspection may use `self`.
        let mut recv = std::mem::take(&mut self.upstream.recv);
        let result = self.process_upstream_frames(&mut recv, hooks);
        recv.shrink_to(KEEP_CAPACITY);
        self.upstream.recv = recv;
        result
    }

    fn process_upstream_frames(
        &mut self,
        recv: &mut RecvBuf,
        hooks: &mut (dyn SessionHooks + Send),
    ) -> Result<(), Ending> {
        let now = Instant::now();
        loop {
            let avail = recv.filled();
            if avail.is_empty() {
                self.upstream.want = 0;
                break;
            }
            if self.upstream.streaming_left > 0 {
                let n = self.upstream.streaming_left.min(avail.len());
                if !self.upstream.streaming_suppressed {
                    self.to_client.push(&avail[..n]);
                }
                self.pipeline.on_backend_bytes(&avail[..n], None);
                recv.consume(n);
                self.upstream.streaming_left -= n;
                continue;
            }
            let header = match frame::parse_header(avail, self.max_message) {
                Ok(Some(header)) => header,
                Ok(None) => {
                    self.upstream.want = 0;
                    break;
                }
                Err(e) => return Err(Ending::UpstreamProtocol(e.to_string())),
            };
            let frame_len = header.frame_len();
            let inspected = matches!(
                header.tag,
                server_tag::AUTHENTICATION
                    | server_tag::BACKEND_KEY_DATA
                    | server_tag::PARAMETER_STATUS
            ) || self.pipeline.inspects(header.tag)
                || self.pooled.as_ref().is_some_and(|p| p.inspects(header.tag));
            // A statement answered with a stale cached result: Postgres's rows are dropped.
            let suppressed = self.pipeline.suppresses(header.tag);
            if avail.len() < frame_len {
                if !inspected {
                    let n = avail.len();
                    if !suppressed {
                        self.to_client.push(avail);
                    }
                    self.pipeline.on_backend_bytes(avail, Some(header.tag));
                    self.upstream.streaming_suppressed = suppressed;
                    self.upstream.streaming_left = frame_len - n;
                    recv.consume(n);
                    continue;
                }
                self.upstream.want = frame_len - avail.len();
                break;
            }
            let frame = &avail[..frame_len];
            let body = &frame[frame::HEADER_LEN..];
            // Transaction mode: answers to pgward's own messages never reach the pipeline.
            if let (Some(pooling), Io::Server(server)) = (&mut self.pooled, &mut self.upstream.io)
                && pooling.on_backend(header.tag, body, server) == Verdict::Swallow
            {
                recv.consume(frame_len);
                continue;
            }
            self.pipeline.on_backend_bytes(frame, Some(header.tag));
            let replacement = if inspected {
                self.inspect_backend(header, body, now, hooks)
            } else {
                None
            };
            match replacement {
                Some(bytes) => self.to_client.push(&bytes),
                None if suppressed => {}
                None => self.to_client.push(frame),
            }
            if inspected {
                // Replies pgward queued behind this completion follow it.
                self.pipeline.drain_replies(self.to_client.writer());
            }
            recv.consume(frame_len);
        }
        Ok(())
    }

    /// Looks at one inspected backend frame; returns the bytes to send the client instead of it,
    /// if any.
    fn inspect_backend(
        &mut self,
        header: FrameHeader,
        body: &[u8],
        now: Instant,
        hooks: &mut (dyn SessionHooks + Send),
    ) -> Option<Vec<u8>> {
        let authenticating = self.phase == Phase::Authenticating;
        match header.tag {
            server_tag::AUTHENTICATION
                if authenticating && backend::auth_code(body) == Some(backend::auth::SASL) =>
            {
                // Channel binding would bind to pgward's upstream TLS certificate, which the
                // client never sees: offer only the mechanisms that survive two TLS legs.
                let mechanisms: Vec<&[u8]> = backend::sasl_mechanisms(body)
                    .into_iter()
                    .filter(|m| !m.ends_with(b"-PLUS"))
                    .collect();
                let mut offer = Vec::new();
                build::auth_sasl(&mut offer, &mechanisms);
                Some(offer)
            }
            server_tag::BACKEND_KEY_DATA if authenticating => {
                let (pid, secret) = backend::backend_key(body)?;
                let key = hooks.backend_key(CancelKey {
                    pid,
                    secret: secret.to_vec(),
                });
                let mut ours = Vec::new();
                build::backend_key_data(&mut ours, key.pid, &key.secret);
                Some(ours)
            }
            server_tag::ERROR_RESPONSE if authenticating => {
                self.sent_fatal |= backend::error_fields(body).is_fatal();
                None
            }
            server_tag::PARAMETER_STATUS => {
                if let Some((b"standard_conforming_strings", value)) =
                    backend::parameter_status(body)
                {
                    self.pipeline
                        .set_standard_conforming_strings(value != b"off");
                }
                None
            }
            _ => {
                if header.tag == server_tag::READY_FOR_QUERY && authenticating {
                    self.phase = Phase::Ready;
                }
                if header.tag == server_tag::ERROR_RESPONSE
                    && backend::error_fields(body).is_fatal()
                {
                    self.sent_fatal = true;
                }
                self.pipeline.on_backend_frame(header.tag, body, now)
            }
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;

//! Transaction mode's side of the relay ([`Pooling`]): a session holds a server connection
//! from its first message bound upstream to the ReadyForQuery 'I' that leaves nothing owed,
//! then gives it back. Frames for the server wait in `pending` while none is held and a
//! checkout runs; once one is, they are sent translated ([`statements`]), after a settings
//! query that makes the server match the client ([`params`]). What the server owes, and which
//! of its answers are pgward's own, is tracked in [`owed`]; the client's CancelRequest is
//! routed by [`cancel`]. See docs/pooling.md.

mod cancel;
mod owed;
mod params;
mod statements;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use cancel::{CancelSlot, InFlight};
pub use params::Params;

use owed::{Kind, Owed};
use statements::Statements;

use super::buffer::SendBuf;
use crate::pool::{Pool, PoolError, Release, Server};
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::frontend;
use crate::protocol::tag::{backend as server_tag, frontend as client_tag};

type Checkout = Pin<Box<dyn Future<Output = Result<Server, PoolError>> + Send>>;

/// Whether the session holds a server connection.
enum Link {
    Detached,
    CheckingOut(Checkout),
    Attached,
}

/// What the relay does with a server frame pgward looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The answer to a message pgward sent on its own: the client never sees it.
    Swallow,
}

/// A transaction-mode session's pooling state.
pub struct Pooling {
    pool: Pool,
    link: Link,
    cancel: Arc<CancelSlot>,
    statements: Statements,
    owed: Owed,
    params: Params,
    /// Frames for the server while none is held, as the pipeline sent them.
    pending: Vec<u8>,
    /// Bytes of a frame passed through before it was whole (a large CopyData).
    passing: usize,
    /// The held server was left with session state: reset it when given back.
    dirty: bool,
}

/// Command tags after which a server keeps state of this client's session.
const DIRTYING: &[&[u8]] = &[
    b"SET",
    b"RESET",
    b"LISTEN",
    b"PREPARE",
    b"DECLARE CURSOR",
    b"LOAD",
];

impl Pooling {
    pub fn new(pool: Pool, params: Params, cancel: Arc<CancelSlot>) -> Self {
        Pooling {
            pool,
            link: Link::Detached,
            cancel,
            statements: Statements::default(),
            owed: Owed::default(),
            params,
            pending: Vec::new(),
            passing: 0,
            dirty: false,
        }
    }

    /// The parameters the client is told at login.
    pub fn reported(&self) -> &[(String, String)] {
        self.params.reported()
    }

    pub fn cancel_slot(&self) -> &Arc<CancelSlot> {
        &self.cancel
    }

    /// Bytes waiting for a server (they count against the relay's backpressure).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is owed or waiting: the server may go back.
    pub fn settled(&self) -> bool {
        self.owed.is_empty() && self.pending.is_empty() && self.passing == 0
    }

    /// Frames bound upstream: translated into `out` for the held server, else kept.
    pub fn feed(&mut self, bytes: &[u8], server: Option<&mut Server>, out: &mut SendBuf) {
        match server {
            Some(server) => self.translate(bytes, server, out),
            None => self.pending.extend_from_slice(bytes),
        }
    }

    /// Starts a checkout when frames wait and polls it; Ready with the server to attach.
    pub fn poll_checkout(&mut self, cx: &mut Context<'_>) -> Poll<Result<Server, PoolError>> {
        if matches!(self.link, Link::Detached) {
            if self.pending.is_empty() {
                return Poll::Pending;
            }
            let pool = self.pool.clone();
            self.link = Link::CheckingOut(Box::pin(async move { pool.checkout().await }));
        }
        let Link::CheckingOut(checkout) = &mut self.link else {
            return Poll::Pending;
        };
        let result = std::task::ready!(checkout.as_mut().poll(cx));
        self.link = match result {
            Ok(_) => Link::Attached,
            Err(_) => Link::Detached,
        };
        Poll::Ready(result)
    }

    /// The session now holds `server`: what waited goes to it, behind the settings query.
    pub fn attach(&mut self, server: &mut Server, out: &mut SendBuf) {
        self.cancel.attach(server.backend_key().clone());
        self.statements.attached();
        if let Some(sql) = self.params.prefix(server.parameters())
            && crate::protocol::build::query(out.writer(), &sql).is_some()
        {
            self.owed.end_segment(Kind::Settings);
        }
        if self.params.carries() {
            self.dirty = true;
        }
        let pending = std::mem::take(&mut self.pending);
        self.translate(&pending, server, out);
        // The buffer's capacity is kept for the next transaction.
        self.pending = pending;
        self.pending.clear();
    }

    /// Before the server goes back (once [`Self::settled`]): Ready when no cancel for it is
    /// in flight; then how it is released.
    pub fn poll_detach(&mut self, cx: &mut Context<'_>) -> Poll<Release> {
        std::task::ready!(self.cancel.poll_detach(cx));
        self.link = Link::Detached;
        self.statements.detached();
        let how = if std::mem::take(&mut self.dirty) || self.params.carries() {
            Release::Dirty
        } else {
            Release::Clean
        };
        Poll::Ready(how)
    }

    /// The held server is lost or closed, not given back.
    pub fn lost(&mut self) {
        self.cancel.clear();
        self.link = Link::Detached;
    }

    fn translate(&mut self, mut bytes: &[u8], server: &mut Server, out: &mut SendBuf) {
        while !bytes.is_empty() {
            if self.passing > 0 {
                let n = self.passing.min(bytes.len());
                let (now, rest) = bytes.split_at(n);
                out.push(now);
                self.passing -= n;
                bytes = rest;
                continue;
            }
            let Ok(Some(header)) = frame::parse_header(bytes, usize::MAX) else {
                // Not a whole header: the relay only sends whole headers, so this is never
                // reached; passed on as it is rather than lost.
                out.push(bytes);
                return;
            };
            let len = header.frame_len();
            let Some((whole, rest)) = bytes.split_at_checked(len) else {
                out.push(bytes);
                self.passing = len.saturating_sub(bytes.len());
                return;
            };
            self.frame(header.tag, whole, server, out);
            bytes = rest;
        }
    }

    fn frame(&mut self, tag: u8, frame: &[u8], server: &mut Server, out: &mut SendBuf) {
        let body = frame.get(HEADER_LEN..).unwrap_or_default();
        match tag {
            client_tag::PARSE | client_tag::BIND | client_tag::DESCRIBE | client_tag::CLOSE => {
                let prepared = &mut server.prepared;
                let writer = out.writer();
                self.statements
                    .translate(tag, frame, body, prepared, &mut self.owed, writer);
            }
            client_tag::EXECUTE => {
                if let Some(execute) = frontend::execute(body)
                    && let Some(capture) = self.statements.executed(execute.portal)
                {
                    self.owed.capture(capture);
                }
                out.push(frame);
            }
            client_tag::QUERY => {
                if let Some(capture) = frontend::query(body).and_then(params::capture) {
                    self.owed.capture(capture);
                }
                out.push(frame);
                self.owed.end_segment(Kind::Client);
            }
            client_tag::SYNC | client_tag::FUNCTION_CALL => {
                out.push(frame);
                self.owed.end_segment(Kind::Client);
            }
            _ => out.push(frame),
        }
    }

    /// Server frames pgward must see whole in transaction mode.
    pub fn inspects(&self, tag: u8) -> bool {
        self.owed.front() == Some(Kind::Settings)
            || matches!(
                tag,
                server_tag::PARSE_COMPLETE
                    | server_tag::CLOSE_COMPLETE
                    | server_tag::ERROR_RESPONSE
                    | server_tag::COMMAND_COMPLETE
                    | server_tag::PARAMETER_STATUS
                    | server_tag::READY_FOR_QUERY
            )
    }

    /// Looks at a server frame before the pipeline does.
    pub fn on_backend(&mut self, tag: u8, body: &[u8], server: &mut Server) -> Verdict {
        if tag == server_tag::PARAMETER_STATUS {
            if let Some((name, value)) = backend::parameter_status(body) {
                server.set_parameter(name, value);
                let name = String::from_utf8_lossy(name);
                self.params.report(&name, &String::from_utf8_lossy(value));
            }
            return Verdict::Pass;
        }
        if self.owed.front() == Some(Kind::Settings) {
            return self.on_settings_answer(tag, body);
        }
        match tag {
            server_tag::PARSE_COMPLETE => swallowed(self.owed.parse_complete()),
            server_tag::CLOSE_COMPLETE => swallowed(self.owed.close_complete()),
            server_tag::ERROR_RESPONSE => {
                self.owed.error();
                Verdict::Pass
            }
            server_tag::COMMAND_COMPLETE => {
                self.on_command_complete(body, server);
                Verdict::Pass
            }
            server_tag::READY_FOR_QUERY => {
                self.on_ready(body, server);
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }

    fn on_settings_answer(&mut self, tag: u8, body: &[u8]) -> Verdict {
        match tag {
            server_tag::ERROR_RESPONSE => {
                let code = backend::error_fields(body).code.unwrap_or_default();
                tracing::warn!(
                    sqlstate = %String::from_utf8_lossy(&code),
                    "the client's settings could not be applied to a pooled server connection"
                );
            }
            server_tag::READY_FOR_QUERY => {
                self.owed.ready();
            }
            _ => {}
        }
        Verdict::Swallow
    }

    fn on_command_complete(&mut self, body: &[u8], server: &mut Server) {
        let tag = body.split(|b| *b == 0).next().unwrap_or_default();
        match tag {
            b"DEALLOCATE ALL" | b"DISCARD ALL" => {
                server.prepared.clear();
                self.statements.clear();
                if tag == b"DISCARD ALL" {
                    self.params.discard_all();
                }
            }
            b"ROLLBACK" => self.params.rolled_back(),
            _ if DIRTYING.iter().any(|d| tag.starts_with(d)) => self.dirty = true,
            _ => {}
        }
    }

    fn on_ready(&mut self, body: &[u8], server: &mut Server) {
        if let Some(ended) = self.owed.ready() {
            for owe in ended.failed {
                if let Some(name) = owe.inserted {
                    server.prepared.remove(&name);
                }
                if let Some(name) = owe.removed {
                    server.prepared.insert(&name);
                }
                if let Some(undo) = owe.undo {
                    self.statements.undo(undo);
                }
            }
            for capture in ended.captures {
                self.params.captured(capture);
            }
        }
        if backend::ready_status(body) == Some(TransactionStatus::Idle) {
            self.params.transaction_ended();
        }
    }
}

fn swallowed(owe: Option<owed::Owe>) -> Verdict {
    match owe {
        Some(owe) if owe.swallow => Verdict::Swallow,
        _ => Verdict::Pass,
    }
}

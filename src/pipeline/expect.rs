//! What each backend message does to the session's expectations (`queue.rs`): counts and
//! captures the bytes of the running statement, hides what a detached or stale-answered
//! statement sends, ends statements (CommandComplete, ErrorResponse, EmptyQueryResponse,
//! PortalSuspended), pops the answers to Parse / Bind / Describe / Close, skips what
//! PostgreSQL skips after an error, and closes a batch at ReadyForQuery — releasing the replies
//! pgward made itself when they come due. A running statement's time budget is `budget.rs`;
//! what happens when it passes, `expire.rs`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::Pipeline;
use super::complete::{FromCache, Served};
use super::fill::Sent;
use super::queue::{Expected, Owed, Reply};
use crate::protocol::backend::{Backend, ErrorFields, TransactionStatus};
use crate::protocol::tag::backend as msg;
use crate::protocol::{build, sqlstate};

impl Pipeline {
    /// Counts bytes of backend messages sent to the client toward the running statement, and
    /// captures them when it fills the cache. `frame_tag` is set when `chunk` starts a message.
    pub fn on_backend_bytes(&mut self, chunk: &[u8], frame_tag: Option<u8>) {
        if let Some(running) = self.expected.front_running() {
            running.bytes_sent += chunk.len() as u64;
            let forwarded = !running.detached();
            if let Some(fill) = &mut running.fill {
                if forwarded {
                    match frame_tag {
                        Some(msg::DATA_ROW) => fill.sent(Sent::Rows),
                        Some(msg::ROW_DESCRIPTION) => fill.sent(Sent::RowDescription),
                        _ => {}
                    }
                }
                fill.capture.push(chunk, frame_tag.is_some());
            }
        }
    }

    /// True when a backend message with this tag must not reach the client: the running
    /// statement is being answered with a stale cached result instead, or was detached.
    pub fn suppresses(&mut self, tag: u8) -> bool {
        let Some(running) = self.expected.front_running() else {
            return false;
        };
        if running.detached() {
            // Its rows, notices, completion; notifications and parameter changes still pass.
            return !matches!(tag, msg::NOTIFICATION_RESPONSE | msg::PARAMETER_STATUS);
        }
        matches!(tag, msg::DATA_ROW | msg::ROW_DESCRIPTION)
            && running
                .fill
                .as_ref()
                .is_some_and(|f| f.serving_stale.is_some())
    }

    /// Backend tags the session must hand to [`Pipeline::on_backend_frame`] whole.
    pub fn inspects(&self, tag: u8) -> bool {
        matches!(
            tag,
            msg::READY_FOR_QUERY
                | msg::COMMAND_COMPLETE
                | msg::ERROR_RESPONSE
                | msg::EMPTY_QUERY_RESPONSE
                | msg::PORTAL_SUSPENDED
        ) || self.expected.tracks_responses()
            && matches!(
                tag,
                msg::PARSE_COMPLETE
                    | msg::BIND_COMPLETE
                    | msg::CLOSE_COMPLETE
                    | msg::ROW_DESCRIPTION
                    | msg::NO_DATA
            )
    }

    /// Sees a complete backend frame that may end a statement. Returns a replacement for the
    /// frame when pgward must reword it (the 57014 of a budget cancel), or swallow it (empty).
    pub fn on_backend_frame(&mut self, tag: u8, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        let message = Backend::decode(tag, body);
        if message.ends_statement() && self.expected.front_running().is_some_and(|r| r.detached()) {
            self.end_detached(&message, now);
            return Some(Vec::new());
        }
        if matches!(
            message,
            Backend::CommandComplete { .. } | Backend::ErrorResponse(_)
        ) && let Some((entry, stale)) = self.settle_fill(&message, now)
        {
            let from = FromCache {
                entry: &entry,
                served: Served::Fallback,
                body: stale.body,
            };
            self.complete(now, stale.rows, None, Some(from));
            return Some(stale.bytes);
        }
        match message {
            m if m.answers_alone() => self.on_answer(tag, body),
            Backend::CommandComplete { rows } => {
                self.complete(now, rows, None, None);
                None
            }
            Backend::EmptyQueryResponse | Backend::PortalSuspended => {
                self.complete(now, 0, None, None);
                None
            }
            Backend::ErrorResponse(error) => self.on_error(&error, now),
            Backend::ReadyForQuery(status) => self.on_ready(status),
            _ => None,
        }
    }

    /// PostgreSQL answered a Parse, Bind, Describe or Close: the tracked expectation at the
    /// front is popped (accepted: the statement a Parse recorded stands). The answer to a
    /// message pgward sent itself is swallowed; the RowDescription of a Describe whose portal
    /// fills the cache is captured into that fill.
    fn on_answer(&mut self, tag: u8, body: &[u8]) -> Option<Vec<u8>> {
        if !matches!(self.expected.front(), Some(Expected::Response(_))) {
            return None;
        }
        match self.expected.pop() {
            Some(Expected::Response(Owed::Own)) => Some(Vec::new()),
            Some(Expected::Response(Owed::DescribeForFill)) => {
                if tag == msg::ROW_DESCRIPTION
                    && let Some(fill) = self.expected.front_running().and_then(|r| r.fill.as_mut())
                {
                    fill.capture_described(tag, body);
                }
                None
            }
            _ => None,
        }
    }

    /// A detached refresh ends: store what it captured, tell the client nothing.
    fn end_detached(&mut self, message: &Backend<'_>, now: Instant) {
        if matches!(
            message,
            Backend::CommandComplete { .. } | Backend::ErrorResponse(_)
        ) {
            self.settle_fill(message, now);
        }
        let (rows, error) = match message {
            Backend::CommandComplete { rows } => (*rows, None),
            Backend::ErrorResponse(e) => {
                (0, Some(e.code.unwrap_or(sqlstate::INTERNAL_ERROR_BYTES)))
            }
            _ => (0, None),
        };
        self.complete(now, rows, error, None);
    }

    /// PostgreSQL failed the front statement: it is recorded, its 57014 reworded when it is
    /// pgward's budget cancel, and everything PostgreSQL skips up to the next Sync is dropped
    /// from the queue, with the prepared-statement changes of that stretch undone.
    fn on_error(&mut self, error: &ErrorFields<'_>, now: Instant) -> Option<Vec<u8>> {
        let mut replacement = None;
        if error.code == Some(sqlstate::QUERY_CANCELED_BYTES)
            && let Some(running) = self.expected.front_running()
            && let Some(budget) = &running.budget
            && budget.rewords_cancel()
        {
            let mut out = Vec::new();
            budget.exceeded().write_error_to(&mut out);
            replacement = Some(out);
        }
        self.shared.stats.proxy().errors.fetch_add(1, Relaxed);
        let code = error.code.unwrap_or(sqlstate::INTERNAL_ERROR_BYTES);
        self.complete(now, 0, Some(code), None);
        let mut undone = Vec::new();
        while let Some(
            Expected::Completion(_)
            | Expected::Response(_)
            | Expected::Reply(Reply { ready: false, .. }),
        ) = self.expected.front()
        {
            match self.expected.pop() {
                Some(Expected::Response(Owed::Client(Some(undo)))) => undone.push(undo),
                Some(Expected::Reply(Reply {
                    undo: Some(undo), ..
                })) => undone.push(undo),
                _ => {}
            }
        }
        // Latest first, so that the name ends up meaning what it meant before the batch.
        for undo in undone.into_iter().rev() {
            self.apply_undo(*undo);
        }
        replacement
    }

    /// ReadyForQuery closes everything up to its Sync / Query; a detached statement's is
    /// swallowed (pgward sent the client its own).
    fn on_ready(&mut self, status: Option<TransactionStatus>) -> Option<Vec<u8>> {
        if let Some(status) = status {
            self.expected.transaction = status;
        }
        let mut replacement = None;
        while let Some(expected) = self.expected.pop() {
            match expected {
                Expected::Ready => break,
                Expected::DetachedReady => {
                    replacement = Some(Vec::new());
                    break;
                }
                _ => {}
            }
        }
        if !self.expected.busy() {
            self.settled();
        }
        replacement
    }

    /// Moves the replies pgward made itself that are now due (nothing owed before them) to
    /// `out`.
    pub fn drain_replies(&mut self, out: &mut Vec<u8>) {
        while let Some(reply) = self.expected.take_due_reply() {
            out.extend_from_slice(&reply.bytes);
            if let Some((entry, shape)) = reply.cached {
                out.extend_from_slice(entry.answer(shape));
            }
            if reply.ready {
                build::ready_for_query(out, self.expected.transaction);
            }
        }
    }
}

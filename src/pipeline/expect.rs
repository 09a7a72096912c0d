//! What the backend owes the client, in order: one completion per running statement, a
//! ReadyForQuery per Sync / Query / FunctionCall, the answers to Parse / Bind / Describe / Close
//! while a batch may hold a cache hit, and the replies pgward queued itself (so a hit or an
//! error pgward makes reaches the client exactly where Postgres would have put it). Also the
//! result capture of a statement filling the cache (and the stale answer that may replace it),
//! and recording the outcome of every completed statement. A running statement's time budget
//! is `budget.rs`; what happens when it passes, `expire.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::budget::Budget;
use super::{Pipeline, replies};
use crate::cache::{Capture, Entry, FillTicket, Filled, MissReason, Shape};
use crate::fingerprint::FingerprintId;
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::tag::backend as msg;
use crate::protocol::{build, sqlstate};
use crate::rules::{CachePolicy, Fallback, Invalidate};
use crate::stats::{Counter, Execution, FingerprintStats};

/// A statement waiting for its completion message.
pub(super) struct Running {
    /// Where its execution is recorded (None: unknown statement, or stats off).
    pub stats: Option<Arc<FingerprintStats>>,
    pub received: Instant,
    pub bytes_sent: u64,
    /// Its time budget, if it has one (`budget.rs`).
    pub budget: Option<Budget>,
    /// The concurrency slot it holds until it completes.
    pub _slot: Option<OwnedSemaphorePermit>,
    /// Set when its result is being captured for the cache.
    pub fill: Option<Box<Fill>>,
    /// The client already got a stale cached answer; this statement keeps running only to
    /// refresh the cache, and everything Postgres sends for it is swallowed.
    pub detached: bool,
    /// Its completion is recorded as a call (false for a background refresh, whose client
    /// was answered, and recorded, from the cache).
    pub counts_call: bool,
}

/// A statement whose result is captured for the cache (it missed, or refreshes an entry).
pub(super) struct Fill {
    pub ticket: FillTicket,
    pub capture: Capture,
    pub shape: Shape,
    pub fingerprint: FingerprintId,
    pub policy: CachePolicy,
    pub tables: Arc<[Box<str>]>,
    pub rule: Arc<str>,
    /// The last good result, for the serve_stale fallbacks.
    pub stale: Option<Arc<Entry>>,
    pub on_budget: Fallback,
    pub on_error: Fallback,
    /// Set when the client gets `stale` instead of what Postgres sends: why.
    pub serving_stale: Option<String>,
    /// A DataRow was already forwarded (a stale result can no longer replace it).
    pub rows_started: bool,
    pub row_description_sent: bool,
}

impl Fill {
    /// The stale entry, if the fallback allows it and it is still usable.
    pub(super) fn usable_stale(&self, fallback: Fallback, now: Instant) -> Option<&Arc<Entry>> {
        if fallback != Fallback::ServeStale || self.rows_started {
            return None;
        }
        self.stale.as_ref().filter(|e| e.is_usable(now))
    }
}

impl Running {
    pub fn new(
        stats: Arc<FingerprintStats>,
        received: Instant,
        budget: Option<Budget>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Running {
            stats: Some(stats),
            received,
            bytes_sent: 0,
            budget,
            _slot: slot,
            fill: None,
            detached: false,
            counts_call: true,
        }
    }

    /// A statement pgward does not fingerprint (stats off, or an unknown portal).
    pub fn untracked(received: Instant) -> Self {
        Running {
            stats: None,
            received,
            bytes_sent: 0,
            budget: None,
            _slot: None,
            fill: None,
            detached: false,
            counts_call: true,
        }
    }
}

enum Expected {
    Completion(Running),
    Ready,
    /// The ReadyForQuery of a detached statement: pgward already sent the client its own.
    DetachedReady,
    /// The answer to a Parse, Bind, Describe or Close (tracked while a batch may hold a hit),
    /// with what to put back if PostgreSQL refuses or skips a Parse / Close.
    Response(Option<Box<super::Undo>>),
    /// An answer pgward made itself: `bytes`, then a cached result, then (simple Query)
    /// ReadyForQuery.
    Reply {
        bytes: Vec<u8>,
        cached: Option<(Arc<Entry>, Shape)>,
        ready: bool,
    },
}

/// The ordered expectations of one session.
pub(super) struct Queue {
    entries: VecDeque<Expected>,
    /// `Expected::Response` entries in `entries`.
    responses: usize,
    last_completion: Instant,
    pub transaction: TransactionStatus,
}

impl Queue {
    pub fn new() -> Self {
        Queue {
            entries: VecDeque::new(),
            responses: 0,
            last_completion: Instant::now(),
            transaction: TransactionStatus::Idle,
        }
    }

    pub fn busy(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Expectations queued: statements and replies owed to the client, in order.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn push_ready(&mut self) {
        self.entries.push_back(Expected::Ready);
    }

    pub fn push_running(&mut self, running: Running) {
        self.entries.push_back(Expected::Completion(running));
    }

    pub fn push_reply(&mut self, bytes: Vec<u8>, ready: bool) {
        self.entries.push_back(Expected::Reply {
            bytes,
            cached: None,
            ready,
        });
    }

    /// A cached result (after `head`, e.g. a notice) as the answer to a statement.
    pub fn push_cached(&mut self, head: Vec<u8>, entry: Arc<Entry>, shape: Shape, ready: bool) {
        self.entries.push_back(Expected::Reply {
            bytes: head,
            cached: Some((entry, shape)),
            ready,
        });
    }

    pub fn push_detached_ready(&mut self) {
        self.entries.push_back(Expected::DetachedReady);
    }

    pub fn push_response(&mut self, undo: Option<Box<super::Undo>>) {
        self.responses += 1;
        self.entries.push_back(Expected::Response(undo));
    }

    /// True while an answer to Parse / Bind / Describe / Close is tracked.
    pub fn tracks_responses(&self) -> bool {
        self.responses > 0
    }

    fn pop(&mut self) -> Option<Expected> {
        let popped = self.entries.pop_front();
        if matches!(popped, Some(Expected::Response(_))) {
            self.responses -= 1;
        }
        popped
    }

    /// True when the front statement is the last one before its ReadyForQuery.
    pub(super) fn front_is_last(&self) -> bool {
        matches!(self.entries.get(1), Some(Expected::Ready))
    }

    /// Where the client's next due answer is: past the detached work at the front.
    fn first_attached(&self) -> usize {
        self.entries
            .iter()
            .position(|e| {
                !matches!(
                    e,
                    Expected::DetachedReady | Expected::Completion(Running { detached: true, .. })
                )
            })
            .unwrap_or(self.entries.len())
    }

    /// The budget of the statement running now, if any.
    pub(super) fn front_budget(&self) -> Option<&Budget> {
        match self.entries.front() {
            Some(Expected::Completion(running)) => running.budget.as_ref(),
            _ => None,
        }
    }

    /// The client got the front statement's answer from pgward: the ReadyForQuery PostgreSQL
    /// sends after it is swallowed (pgward sent the client its own).
    pub(super) fn detach_front_ready(&mut self) {
        if let Some(ready) = self.entries.get_mut(1) {
            *ready = Expected::DetachedReady;
        }
    }

    pub(super) fn front_running(&mut self) -> Option<&mut Running> {
        match self.entries.front_mut() {
            Some(Expected::Completion(running)) => Some(running),
            _ => None,
        }
    }
}

impl Pipeline {
    /// Counts bytes of backend messages sent to the client toward the running statement, and
    /// captures them when it fills the cache. `frame_tag` is set when `chunk` starts a message.
    pub fn on_backend_bytes(&mut self, chunk: &[u8], frame_tag: Option<u8>) {
        if let Some(running) = self.expected.front_running() {
            running.bytes_sent += chunk.len() as u64;
            let forwarded = !running.detached;
            if let Some(fill) = &mut running.fill {
                if forwarded && fill.serving_stale.is_none() {
                    match frame_tag {
                        Some(msg::DATA_ROW) => fill.rows_started = true,
                        Some(msg::ROW_DESCRIPTION) => fill.row_description_sent = true,
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
        if running.detached {
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
    /// frame when pgward must reword it (the 57014 of a budget cancel).
    pub fn on_backend_frame(&mut self, tag: u8, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut replacement = None;
        let detached = self.expected.front_running().is_some_and(|r| r.detached);
        if matches!(
            tag,
            msg::COMMAND_COMPLETE
                | msg::ERROR_RESPONSE
                | msg::EMPTY_QUERY_RESPONSE
                | msg::PORTAL_SUSPENDED
        ) && detached
        {
            // A detached refresh ends: store what it captured, tell the client nothing.
            if matches!(tag, msg::COMMAND_COMPLETE | msg::ERROR_RESPONSE) {
                self.settle_fill(tag, body, now);
            }
            let error = (tag == msg::ERROR_RESPONSE).then(|| {
                backend::error_fields(body)
                    .code
                    .unwrap_or(sqlstate::INTERNAL_ERROR_BYTES)
            });
            self.complete(now, backend::command_rows(body), error);
            return Some(Vec::new());
        }
        if matches!(tag, msg::COMMAND_COMPLETE | msg::ERROR_RESPONSE)
            && let Some((stale, rows)) = self.settle_fill(tag, body, now)
        {
            self.complete(now, rows, None);
            return Some(stale);
        }
        match tag {
            msg::PARSE_COMPLETE
            | msg::BIND_COMPLETE
            | msg::CLOSE_COMPLETE
            | msg::ROW_DESCRIPTION
            | msg::NO_DATA => {
                // Accepted: the statement the Parse recorded stands.
                if matches!(self.expected.entries.front(), Some(Expected::Response(_))) {
                    self.expected.pop();
                }
            }
            msg::COMMAND_COMPLETE => self.complete(now, backend::command_rows(body), None),
            msg::EMPTY_QUERY_RESPONSE | msg::PORTAL_SUSPENDED => self.complete(now, 0, None),
            msg::ERROR_RESPONSE => {
                let code = backend::error_fields(body).code;
                if code == Some(sqlstate::QUERY_CANCELED_BYTES)
                    && let Some(running) = self.expected.front_running()
                    && let Some(budget) = &running.budget
                    && budget.rewords_cancel()
                {
                    let mut out = Vec::new();
                    budget.exceeded().write_error_to(&mut out);
                    replacement = Some(out);
                }
                self.shared.stats.proxy().errors.fetch_add(1, Relaxed);
                self.complete(now, 0, Some(code.unwrap_or(sqlstate::INTERNAL_ERROR_BYTES)));
                // The backend skips everything up to the next Sync after an error, and so do
                // the answers pgward queued for that stretch.
                let mut undone = Vec::new();
                while let Some(
                    Expected::Completion(_)
                    | Expected::Response(_)
                    | Expected::Reply { ready: false, .. },
                ) = self.expected.entries.front()
                {
                    if let Some(Expected::Response(Some(undo))) = self.expected.pop() {
                        undone.push(undo);
                    }
                }
                // Latest first, so that the name ends up meaning what it meant before the batch.
                for undo in undone.into_iter().rev() {
                    self.apply_undo(*undo);
                }
            }
            msg::READY_FOR_QUERY => {
                if let Some(status) = backend::ready_status(body) {
                    self.expected.transaction = status;
                }
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
            }
            _ => {}
        }
        replacement
    }

    /// Moves the replies pgward made itself that are now due (nothing owed before them) to
    /// `out`.
    pub fn drain_replies(&mut self, out: &mut Vec<u8>) {
        let at = self.expected.first_attached();
        while let Some(Expected::Reply { .. }) = self.expected.entries.get(at) {
            if let Some(Expected::Reply {
                bytes,
                cached,
                ready,
            }) = self.expected.entries.remove(at)
            {
                out.extend_from_slice(&bytes);
                if let Some((entry, shape)) = cached {
                    out.extend_from_slice(entry.answer(shape));
                }
                if ready {
                    build::ready_for_query(out, self.expected.transaction);
                }
            }
        }
    }

    /// The front statement's fill ends with this CommandComplete or ErrorResponse: store the
    /// captured result, or (when the client gets a stale result instead) return that
    /// answer and its row count.
    fn settle_fill(&mut self, tag: u8, body: &[u8], now: Instant) -> Option<(Vec<u8>, u64)> {
        let last = self.expected.front_is_last();
        let running = self.expected.front_running()?;
        let stats = running.stats.clone();
        let fill = running.fill.take()?;
        let mut fill = *fill;
        if fill.serving_stale.is_none() && tag == msg::ERROR_RESPONSE && last {
            let code = backend::error_fields(body).code;
            let class_ok = code.is_some_and(|c| matches!(&c[..2], b"08" | b"53" | b"57"));
            if class_ok && fill.usable_stale(fill.on_error, now).is_some() {
                let code = code.map(|c| String::from_utf8_lossy(&c).into_owned());
                fill.serving_stale = Some(format!(
                    "Postgres failed the query with SQLSTATE {}",
                    code.unwrap_or_default()
                ));
            }
        }
        if let Some(why) = fill.serving_stale.take() {
            let entry = fill.stale.take()?;
            let mut out = replies::stale_served(entry.age(now), &why, &fill.rule, fill.fingerprint);
            // A RowDescription Postgres already sent is not sent twice.
            let body = if fill.row_description_sent {
                entry.answer(Shape::RowsOnly)
            } else {
                entry.answer(fill.shape)
            };
            out.extend_from_slice(body);
            entry.count_hit();
            self.shared.cache.count_stale_hit();
            if let Some(stats) = &stats {
                stats.bump(Counter::StaleServed);
                stats.add(Counter::CacheBytesServed, body.len() as u64);
            }
            tracing::info!(fingerprint = %fill.fingerprint, rule = &*fill.rule, age_ms = entry.age(now).as_millis() as u64, "served a stale cached result");
            return Some((out, entry.rows));
        }
        if tag == msg::COMMAND_COMPLETE {
            let overflowed = fill.capture.overflowed();
            match fill.capture.finish(fill.shape) {
                Some((bytes, row_description_len, rows)) => {
                    let stored = self.shared.cache.store(
                        fill.ticket,
                        Filled {
                            fingerprint: fill.fingerprint,
                            bytes,
                            row_description_len,
                            rows,
                            ttl: fill.policy.ttl,
                            stale_for: fill.policy.stale_for,
                            tables: fill.tables,
                            invalidate_on_write: fill.policy.invalidate == Invalidate::OnWrite,
                        },
                    );
                    if stored && let Some(stats) = &stats {
                        stats.bump(Counter::CacheFill);
                    }
                }
                None if overflowed => {
                    if let Some(stats) = &stats {
                        stats.record_miss_reason(MissReason::TooLarge);
                    }
                }
                None => {}
            }
        } else if let Some(stats) = &stats {
            stats.record_miss_reason(MissReason::Error);
        }
        None
    }

    /// Nothing is owed any more: the transaction status is final, and the writes of a
    /// finished transaction invalidate the cache entries that read their tables.
    fn settled(&mut self) {
        let idle = self.expected.transaction == TransactionStatus::Idle;
        if let Some(session) = &mut self.cache
            && let Some(committed) = session.on_settled(idle)
            && self.shared.cache.active()
        {
            self.shared
                .cache
                .writes_committed(&committed.tables, committed.unknown);
        }
    }

    fn complete(&mut self, now: Instant, rows: u64, error: Option<[u8; 5]>) {
        if !matches!(self.expected.entries.front(), Some(Expected::Completion(_))) {
            return;
        }
        let Some(Expected::Completion(running)) = self.expected.pop() else {
            return;
        };
        let started = running.received.max(self.expected.last_completion);
        self.expected.last_completion = now;
        let Some(stats) = running.stats else {
            return;
        };
        if !running.counts_call {
            return;
        }
        let execution = Execution {
            elapsed: now.saturating_duration_since(started),
            rows,
            bytes_sent: running.bytes_sent,
            error_sqlstate: error,
        };
        // A reset or an eviction since the statement started detached its record: record
        // into the live one instead of losing the execution.
        let stats = if stats.is_detached() {
            self.shared.stats.fingerprint(stats.id(), stats.query())
        } else {
            stats
        };
        stats.record(&execution);
        if let Some(threshold) = self.shared.slow_statement
            && execution.elapsed >= threshold
        {
            log_slow(&stats, &execution, running.budget.as_ref());
        }
        tracing::trace!(fingerprint = %stats.id(), elapsed_us = execution.elapsed.as_micros() as u64, rows, "statement complete");
    }
}

/// The slow statement log line: fingerprint, normalized text (no literals), duration, rule and
/// outcome.
fn log_slow(stats: &FingerprintStats, execution: &Execution, budget: Option<&Budget>) {
    let rule = budget
        .and_then(|b| b.rule().cloned())
        .or_else(|| stats.rule());
    let outcome = match (execution.error_sqlstate, budget.is_some_and(Budget::passed)) {
        (_, true) => "budget_exceeded".to_owned(),
        (Some(code), false) => format!("error {}", String::from_utf8_lossy(&code)),
        (None, false) => "ok".to_owned(),
    };
    tracing::warn!(
        target: "pgward::slow",
        fingerprint = %stats.id(),
        query = stats.query(),
        duration_ms = execution.elapsed.as_secs_f64() * 1000.0,
        rows = execution.rows,
        rule = rule.as_deref().unwrap_or("-"),
        outcome = %outcome,
        "slow statement"
    );
}

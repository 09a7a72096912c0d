//! Every statement's path through pgward, in one place. The session hands each client frame that
//! starts or names a statement (Query, Parse, Bind, Execute, Close, Sync, FunctionCall) to
//! [`Pipeline::on_client_frame`] before forwarding it, and each backend frame that completes one
//! (CommandComplete, EmptyQueryResponse, PortalSuspended, ErrorResponse, ReadyForQuery) to
//! [`Pipeline::on_backend_frame`].
//!
//! Phases of one statement, as later features plug in:
//! 1. fingerprint (cached per text; prepared statements once at Parse)      — here
//! 2. rules: reject / rewrite / budget / concurrency cap / cache policy      — rules issue
//! 3. cache lookup and replay                                               — cache issue
//! 4. forward upstream under the deadline                                   — session
//! 5. record: latency, rows, bytes, outcome per fingerprint                 — here
//!
//! The tracker mirrors the protocol's ordering: every Execute (and every statement of a simple
//! Query) expects exactly one completion, and a ReadyForQuery closes everything up to its Sync.

mod fingerprints;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

pub use fingerprints::{FingerprintCache, Fingerprinted};

use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::frontend::{self, Target};
use crate::stats::{Execution, FingerprintStats, Stats};

/// What the session does with a client frame after the pipeline saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Send the original bytes upstream.
    Forward,
}

/// Process-wide handles the per-session pipelines share.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub fingerprints: FingerprintCache,
}

/// A statement waiting for its completion message.
struct Running {
    /// Where its execution is recorded (None: unknown statement, or stats off).
    stats: Option<Arc<FingerprintStats>>,
    received: Instant,
    bytes_sent: u64,
}

/// What the backend owes the client, in order.
enum Expected {
    Completion(Running),
    /// A ReadyForQuery (after Sync, a simple Query, or a FunctionCall).
    Ready,
}

/// Per-session statement bookkeeping.
pub struct Pipeline {
    shared: Arc<Shared>,
    expected: VecDeque<Expected>,
    prepared: HashMap<Box<[u8]>, Fingerprinted>,
    portals: HashMap<Box<[u8]>, Fingerprinted>,
    last_completion: Instant,
    transaction: TransactionStatus,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>) -> Self {
        Pipeline {
            shared,
            expected: VecDeque::new(),
            prepared: HashMap::new(),
            portals: HashMap::new(),
            last_completion: Instant::now(),
            transaction: TransactionStatus::Idle,
        }
    }

    /// True while the upstream still owes this session a response.
    pub fn busy(&self) -> bool {
        !self.expected.is_empty()
    }

    /// Transaction status from the last ReadyForQuery.
    pub fn transaction(&self) -> TransactionStatus {
        self.transaction
    }

    /// Sees a complete client frame (`body` excludes tag and length) before it is forwarded.
    pub fn on_client_frame(&mut self, tag: u8, body: &[u8], now: Instant) -> ClientAction {
        match tag {
            b'Q' => {
                if let Some(sql) = frontend::query(body) {
                    self.expect_query(sql, now);
                }
                self.expected.push_back(Expected::Ready);
            }
            b'P' if self.recording() => {
                if let Some(parse) = frontend::parse(body)
                    && let Some(statement) = self.shared.fingerprints.statement(parse.sql)
                {
                    self.prepared.insert(parse.statement.into(), statement);
                }
            }
            b'B' if self.recording() => {
                if let Some(bind) = frontend::bind(body) {
                    match self.prepared.get(bind.statement) {
                        Some(statement) => {
                            self.portals.insert(bind.portal.into(), statement.clone())
                        }
                        None => self.portals.remove(bind.portal),
                    };
                }
            }
            b'E' => {
                let stats = frontend::execute(body)
                    .and_then(|e| self.portals.get(e.portal))
                    .map(|statement| self.shared.stats.fingerprint(statement.id, &statement.text));
                self.shared.stats.proxy().queries.fetch_add(1, Relaxed);
                self.expect_completion(stats, now);
            }
            b'C' => match frontend::describe_or_close(body) {
                Some(Target::Statement(name)) => {
                    self.prepared.remove(name);
                }
                Some(Target::Portal(name)) => {
                    self.portals.remove(name);
                }
                None => {}
            },
            b'S' | b'F' => self.expected.push_back(Expected::Ready),
            _ => {}
        }
        ClientAction::Forward
    }

    /// One expected completion per statement of a simple Query.
    fn expect_query(&mut self, sql: &[u8], now: Instant) {
        let proxy = self.shared.stats.proxy();
        if !self.recording() {
            proxy.queries.fetch_add(1, Relaxed);
            self.expect_completion(None, now);
            return;
        }
        let statements = self.shared.fingerprints.query(sql);
        proxy.queries.fetch_add(statements.len() as u64, Relaxed);
        for statement in statements.iter() {
            let stats = self.shared.stats.fingerprint(statement.id, &statement.text);
            self.expect_completion(Some(stats), now);
        }
    }

    fn recording(&self) -> bool {
        self.shared.stats.settings().enabled
    }

    fn expect_completion(&mut self, stats: Option<Arc<FingerprintStats>>, received: Instant) {
        self.expected.push_back(Expected::Completion(Running {
            stats,
            received,
            bytes_sent: 0,
        }));
    }

    /// Counts bytes of backend messages sent to the client toward the running statement.
    pub fn on_backend_bytes(&mut self, n: usize) {
        if let Some(Expected::Completion(running)) = self.expected.front_mut() {
            running.bytes_sent += n as u64;
        }
    }

    /// Sees a complete backend frame that may end a statement.
    pub fn on_backend_frame(&mut self, tag: u8, body: &[u8], now: Instant) {
        match tag {
            b'C' => self.complete(now, backend::command_rows(body), None),
            b'I' | b's' => self.complete(now, 0, None),
            b'E' => {
                let code = backend::error_fields(body).code;
                self.shared.stats.proxy().errors.fetch_add(1, Relaxed);
                self.complete(now, 0, Some(code.unwrap_or(*b"XX000")));
                // The backend skips everything up to the next Sync after an error.
                while let Some(Expected::Completion(_)) = self.expected.front() {
                    self.expected.pop_front();
                }
            }
            b'Z' => {
                if let Some(status) = backend::ready_status(body) {
                    self.transaction = status;
                }
                while let Some(expected) = self.expected.pop_front() {
                    if matches!(expected, Expected::Ready) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }

    fn complete(&mut self, now: Instant, rows: u64, error: Option<[u8; 5]>) {
        if !matches!(self.expected.front(), Some(Expected::Completion(_))) {
            return;
        }
        let Some(Expected::Completion(running)) = self.expected.pop_front() else {
            return;
        };
        let started = running.received.max(self.last_completion);
        self.last_completion = now;
        let Some(stats) = running.stats else {
            return;
        };
        let execution = Execution {
            elapsed: now.saturating_duration_since(started),
            rows,
            bytes_sent: running.bytes_sent,
            error_sqlstate: error,
        };
        stats.record(&execution);
        tracing::trace!(fingerprint = %stats.id(), elapsed_us = execution.elapsed.as_micros() as u64, rows, "statement complete");
    }
}

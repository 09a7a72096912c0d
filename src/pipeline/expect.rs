//! What the backend owes the client, in order: one completion per running statement, a
//! ReadyForQuery per Sync / Query / FunctionCall, and the replies pgward queued itself. Also each
//! statement's deadline (its time budget) and what happens when it passes, and recording the
//! outcome of every completed statement.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::{Pipeline, replies};
use crate::fingerprint::FingerprintId;
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::{build, sqlstate};
use crate::stats::{Counter, Execution, FingerprintStats};

/// A time budget attached to a running statement.
pub(super) struct Deadline {
    pub at: Instant,
    pub budget: Duration,
    pub rule: Option<Arc<str>>,
    pub fingerprint: FingerprintId,
    pub observe: bool,
    pub cancel_grace: Duration,
    /// When the budget passed and the cancel was sent (enforce mode).
    pub expired_at: Option<Instant>,
}

/// A statement waiting for its completion message.
pub(super) struct Running {
    /// Where its execution is recorded (None: unknown statement, or stats off).
    pub stats: Option<Arc<FingerprintStats>>,
    pub received: Instant,
    pub bytes_sent: u64,
    pub deadline: Option<Deadline>,
    /// The concurrency slot it holds until it completes.
    pub _slot: Option<OwnedSemaphorePermit>,
}

impl Running {
    pub fn new(
        stats: Arc<FingerprintStats>,
        received: Instant,
        deadline: Option<Deadline>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Running {
            stats: Some(stats),
            received,
            bytes_sent: 0,
            deadline,
            _slot: slot,
        }
    }

    /// A statement pgward does not fingerprint (stats off, or an unknown portal).
    pub fn untracked(received: Instant) -> Self {
        Running {
            stats: None,
            received,
            bytes_sent: 0,
            deadline: None,
            _slot: None,
        }
    }
}

enum Expected {
    Completion(Running),
    Ready,
    /// An answer pgward made itself; `ready` appends ReadyForQuery (simple Query).
    Reply {
        bytes: Vec<u8>,
        ready: bool,
    },
}

/// The ordered expectations of one session.
pub(super) struct Queue {
    entries: VecDeque<Expected>,
    last_completion: Instant,
    pub transaction: TransactionStatus,
}

impl Queue {
    pub fn new() -> Self {
        Queue {
            entries: VecDeque::new(),
            last_completion: Instant::now(),
            transaction: TransactionStatus::Idle,
        }
    }

    pub fn busy(&self) -> bool {
        !self.entries.is_empty()
    }

    pub fn push_ready(&mut self) {
        self.entries.push_back(Expected::Ready);
    }

    pub fn push_running(&mut self, running: Running) {
        self.entries.push_back(Expected::Completion(running));
    }

    pub fn push_reply(&mut self, bytes: Vec<u8>, ready: bool) {
        self.entries.push_back(Expected::Reply { bytes, ready });
    }

    fn front_running(&mut self) -> Option<&mut Running> {
        match self.entries.front_mut() {
            Some(Expected::Completion(running)) => Some(running),
            _ => None,
        }
    }
}

/// What the session must do when a deadline passes.
pub enum Expiry {
    /// Send a CancelRequest upstream; close the session if the statement is still running at
    /// the returned instant.
    Cancel { grace_until: Instant },
    /// Observe mode (or nothing running): nothing to do.
    Nothing,
}

impl Pipeline {
    /// Counts bytes of backend messages sent to the client toward the running statement.
    pub fn on_backend_bytes(&mut self, n: usize) {
        if let Some(running) = self.expected.front_running() {
            running.bytes_sent += n as u64;
        }
    }

    /// Sees a complete backend frame that may end a statement. Returns a replacement for the
    /// frame when pgward must reword it (the 57014 of a budget cancel).
    pub fn on_backend_frame(&mut self, tag: u8, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut replacement = None;
        match tag {
            b'C' => self.complete(now, backend::command_rows(body), None),
            b'I' | b's' => self.complete(now, 0, None),
            b'E' => {
                let code = backend::error_fields(body).code;
                if code == Some(*b"57014")
                    && let Some(running) = self.expected.front_running()
                    && let Some(deadline) = &running.deadline
                    && deadline.expired_at.is_some()
                {
                    let mut out = Vec::new();
                    replies::budget_exceeded(deadline, false).write_error_to(&mut out);
                    replacement = Some(out);
                }
                self.shared.stats.proxy().errors.fetch_add(1, Relaxed);
                self.complete(now, 0, Some(code.unwrap_or(*b"XX000")));
                // The backend skips everything up to the next Sync after an error.
                while let Some(Expected::Completion(_)) = self.expected.entries.front() {
                    self.expected.entries.pop_front();
                }
            }
            b'Z' => {
                if let Some(status) = backend::ready_status(body) {
                    self.expected.transaction = status;
                }
                while let Some(expected) = self.expected.entries.pop_front() {
                    if matches!(expected, Expected::Ready) {
                        break;
                    }
                }
            }
            _ => {}
        }
        replacement
    }

    /// Moves the replies pgward made itself that are now due (nothing owed before them) to
    /// `out`.
    pub fn drain_replies(&mut self, out: &mut Vec<u8>) {
        while let Some(Expected::Reply { .. }) = self.expected.entries.front() {
            if let Some(Expected::Reply { bytes, ready }) = self.expected.entries.pop_front() {
                out.extend_from_slice(&bytes);
                if ready {
                    build::ready_for_query(out, self.expected.transaction);
                }
            }
        }
    }

    /// The next instant the session must act at: the running statement's deadline, or the end
    /// of its cancel grace.
    pub fn next_timer(&self) -> Option<Instant> {
        match self.expected.entries.front() {
            Some(Expected::Completion(Running {
                deadline: Some(d), ..
            })) => match d.expired_at {
                None => Some(d.at),
                Some(_) if d.observe => None,
                Some(expired) => Some(expired + d.cancel_grace),
            },
            _ => None,
        }
    }

    /// Called when [`Pipeline::next_timer`] has passed.
    pub fn on_timer(&mut self, now: Instant) -> Expiry {
        let Some(running) = self.expected.front_running() else {
            return Expiry::Nothing;
        };
        let stats = running.stats.clone();
        let Some(deadline) = &mut running.deadline else {
            return Expiry::Nothing;
        };
        if let Some(expired) = deadline.expired_at {
            return Expiry::Cancel {
                grace_until: expired + deadline.cancel_grace,
            };
        }
        deadline.expired_at = Some(now);
        let (observe, budget, rule) = (deadline.observe, deadline.budget, deadline.rule.clone());
        let grace_until = now + deadline.cancel_grace;
        if let Some(stats) = &stats {
            stats.bump(if observe {
                Counter::WouldTimeout
            } else {
                Counter::BudgetExceeded
            });
        }
        tracing::info!(fingerprint = %deadline.fingerprint, rule = rule.as_deref().unwrap_or("(default)"), ?budget, observe, "time budget exceeded");
        if observe {
            Expiry::Nothing
        } else {
            Expiry::Cancel { grace_until }
        }
    }

    /// The FATAL error for a statement that ignored its budget cancel.
    pub fn cancel_ignored_error(&self, out: &mut Vec<u8>) {
        if let Some(Expected::Completion(Running {
            deadline: Some(deadline),
            ..
        })) = self.expected.entries.front()
        {
            replies::budget_exceeded(deadline, true).write_error_to(out);
        } else {
            build::Report::fatal(
                sqlstate::QUERY_CANCELED,
                "pgward: statement did not stop after its cancel",
            )
            .write_error(out);
        }
    }

    fn complete(&mut self, now: Instant, rows: u64, error: Option<[u8; 5]>) {
        if !matches!(self.expected.entries.front(), Some(Expected::Completion(_))) {
            return;
        }
        let Some(Expected::Completion(running)) = self.expected.entries.pop_front() else {
            return;
        };
        let started = running.received.max(self.expected.last_completion);
        self.expected.last_completion = now;
        let Some(stats) = running.stats else {
            return;
        };
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
        tracing::trace!(fingerprint = %stats.id(), elapsed_us = execution.elapsed.as_micros() as u64, rows, "statement complete");
    }
}

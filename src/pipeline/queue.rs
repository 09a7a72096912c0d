//! What the backend owes the client, in order: one completion per running statement
//! ([`Running`]), a ReadyForQuery per Sync / Query / FunctionCall, the answers to Parse / Bind
//! / Describe / Close while a batch may hold a cache hit, and the replies pgward queued itself,
//! so that a hit or an error pgward makes reaches the client exactly where PostgreSQL would
//! have put it. The queue only orders; what each backend message does to it is `expect.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::Undo;
use super::admit::Debit;
use super::budget::Budget;
use super::fill::Fill;
use crate::cache::{Entry, Shape};
use crate::protect::Objective;
use crate::protocol::backend::TransactionStatus;
use crate::stats::FingerprintStats;

/// Who gets what PostgreSQL sends for a running statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Client {
    /// The client waits for it; its completion is recorded when it comes.
    Waiting,
    /// The client was answered (and its answer recorded) by pgward — from a stale cached
    /// result, or with its 57014 — and the statement runs on only to refresh the cache:
    /// everything PostgreSQL sends for it but notifications and parameter changes is swallowed.
    Answered,
}

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
    pub client: Client,
    /// The database time it reserved under its limit, paid when it completes.
    pub debit: Option<Debit>,
    /// The protected traffic whose objective its latency counts toward.
    pub objective: Option<Arc<Objective>>,
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
            client: Client::Waiting,
            debit: None,
            objective: None,
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
            client: Client::Waiting,
            debit: None,
            objective: None,
        }
    }

    pub fn detached(&self) -> bool {
        self.client == Client::Answered
    }
}

pub(super) enum Expected {
    Completion(Running),
    Ready,
    /// The ReadyForQuery of a detached statement: pgward already sent the client its own.
    DetachedReady,
    /// The answer to a Parse, Bind, Describe or Close (tracked while a batch may hold a hit,
    /// or sent by pgward itself).
    Response(Owed),
    /// An answer pgward made itself.
    Reply(Reply),
}

/// Whose message a tracked answer to Parse / Bind / Describe / Close belongs to.
pub(super) enum Owed {
    /// The client's; with what to put back if PostgreSQL refuses or skips a Parse / Close.
    Client(Option<Box<Undo>>),
    /// The client's Describe of the portal whose Execute fills the cache: its
    /// RowDescription goes to the client and into the fill (`Shape::Described`).
    DescribeForFill,
    /// pgward's own re-send of a statement or portal it had answered itself: PostgreSQL's
    /// answer is swallowed.
    Own,
}

/// An answer pgward made itself: `bytes`, then a cached result, then (simple Query)
/// ReadyForQuery.
pub(super) struct Reply {
    pub bytes: Vec<u8>,
    pub cached: Option<(Arc<Entry>, Shape)>,
    pub ready: bool,
    /// A Parse pgward answered in `bytes`: what to put back if PostgreSQL skips the reply
    /// (an earlier message of the batch failed).
    pub undo: Option<Box<Undo>>,
}

/// Where the running statement stands in the queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunningAt {
    /// Answers to earlier Parse / Bind / Describe messages are still owed to the client.
    pub answers_owed: bool,
    /// It is the last statement before its ReadyForQuery.
    pub last: bool,
}

/// The ordered expectations of one session.
pub(super) struct Queue {
    entries: VecDeque<Expected>,
    /// `Expected::Response` entries in `entries`.
    responses: usize,
    /// When the previous statement completed: a pipelined statement's latency starts there.
    pub last_completion: Instant,
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
        self.entries.push_back(Expected::Reply(Reply {
            bytes,
            cached: None,
            ready,
            undo: None,
        }));
    }

    /// A cached result (after `bytes`: a notice, the answers to its held messages) as the
    /// answer to a statement.
    pub fn push_cached(&mut self, reply: Reply) {
        self.entries.push_back(Expected::Reply(reply));
    }

    pub fn push_detached_ready(&mut self) {
        self.entries.push_back(Expected::DetachedReady);
    }

    pub fn push_response(&mut self, owed: Owed) {
        self.responses += 1;
        self.entries.push_back(Expected::Response(owed));
    }

    /// True while an answer to Parse / Bind / Describe / Close is tracked.
    pub fn tracks_responses(&self) -> bool {
        self.responses > 0
    }

    /// The first statement still waiting for its completion.
    pub fn first_running(&self) -> Option<&Running> {
        self.entries.iter().find_map(|entry| match entry {
            Expected::Completion(running) => Some(running),
            _ => None,
        })
    }

    pub fn front(&self) -> Option<&Expected> {
        self.entries.front()
    }

    pub fn pop(&mut self) -> Option<Expected> {
        let popped = self.entries.pop_front();
        if matches!(popped, Some(Expected::Response(_))) {
            self.responses = self.responses.saturating_sub(1);
        }
        popped
    }

    /// Removes the running statement at the front, if that is what the front is.
    pub fn pop_completion(&mut self) -> Option<Running> {
        if !matches!(self.entries.front(), Some(Expected::Completion(_))) {
            return None;
        }
        match self.pop() {
            Some(Expected::Completion(running)) => Some(running),
            _ => None,
        }
    }

    /// True when the front statement is the last one before its ReadyForQuery.
    pub fn front_is_last(&self) -> bool {
        matches!(self.entries.get(1), Some(Expected::Ready))
    }

    /// Where the client's next due answer is: past the detached work at the front.
    fn first_attached(&self) -> usize {
        self.entries
            .iter()
            .position(|e| match e {
                Expected::DetachedReady => false,
                Expected::Completion(running) => !running.detached(),
                _ => true,
            })
            .unwrap_or(self.entries.len())
    }

    /// Takes the reply pgward made itself that is due now (nothing owed before it), if any.
    pub fn take_due_reply(&mut self) -> Option<Reply> {
        let at = self.first_attached();
        if !matches!(self.entries.get(at), Some(Expected::Reply(_))) {
            return None;
        }
        match self.entries.remove(at) {
            Some(Expected::Reply(reply)) => Some(reply),
            _ => None,
        }
    }

    /// Where the statement running upstream now is: the first completion, past the answers
    /// to the Parse / Bind / Describe before it. PostgreSQL sends those only when it flushes
    /// (at the batch's Sync, after the Execute ran), so they are still owed while it runs.
    fn running_at(&self) -> Option<usize> {
        let at = self
            .entries
            .iter()
            .position(|e| !matches!(e, Expected::Response(_)))?;
        matches!(self.entries.get(at), Some(Expected::Completion(_))).then_some(at)
    }

    /// The statement running upstream now, for its timers: see [`Queue::running_at`].
    /// `answers_owed` says whether answers to earlier messages must reach the client first.
    pub fn running_for_timer(&mut self) -> Option<(&mut Running, RunningAt)> {
        let at = self.running_at()?;
        let place = RunningAt {
            answers_owed: at > 0,
            last: matches!(self.entries.get(at + 1), Some(Expected::Ready)),
        };
        match self.entries.get_mut(at) {
            Some(Expected::Completion(running)) => Some((running, place)),
            _ => None,
        }
    }

    /// The budget of the statement running now, if any.
    pub fn running_budget(&self) -> Option<&Budget> {
        match self.entries.get(self.running_at()?) {
            Some(Expected::Completion(running)) => running.budget.as_ref(),
            _ => None,
        }
    }

    /// The client got the front statement's answer from pgward: the ReadyForQuery PostgreSQL
    /// sends after it is swallowed (pgward sent the client its own).
    pub fn detach_front_ready(&mut self) {
        if let Some(ready) = self.entries.get_mut(1) {
            *ready = Expected::DetachedReady;
        }
    }

    pub fn front_running(&mut self) -> Option<&mut Running> {
        match self.entries.front_mut() {
            Some(Expected::Completion(running)) => Some(running),
            _ => None,
        }
    }
}

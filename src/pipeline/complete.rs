//! The last phase: a statement's outcome is recorded here, and only here. Whoever answered it —
//! PostgreSQL, the cache (fresh, while revalidating, or a stale fallback), or pgward itself (a
//! budget's 57014) — ends in one [`Outcome`] that [`Pipeline::record`] writes to the
//! fingerprint's stats: latency, rows, bytes, SQLSTATE, and how the cache served it. What
//! happens to a statement on its way (a miss and why, a reject, a rewrite, a shed, a queue
//! wait, a passed budget, a fill) is an [`Event`], counted by [`note`] the moment it happens —
//! observe mode folded in there (an observed reject counts `would_reject`, ...). No other code
//! in the pipeline touches a fingerprint's counters. Also what happens when nothing is owed any
//! more ([`Pipeline::settled`]) and the slow-statement log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pipeline;
use super::budget::Budget;
use crate::cache::{Entry, MissReason};
use crate::fingerprint::FingerprintId;
use crate::protocol::backend::TransactionStatus;
use crate::stats::{Counter, Execution, FingerprintStats};

/// Whether a rule enforces what it decided, or only counts it (`mode = "observe"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Enforced {
    Yes,
    Observed,
}

/// Something that happened to a statement on its way through the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// The cache could not answer it (counted as a miss), and why.
    Miss(MissReason),
    /// Its result, captured for the cache, was not stored, and why (the miss was counted).
    NotStored(MissReason),
    /// Its result was stored in the cache.
    Filled,
    /// It runs to refresh a stale entry.
    Refresh,
    /// It waits for the identical query another session runs.
    Coalesced,
    Rejected(Enforced),
    /// Rewritten (to `FingerprintId`), or would have been.
    Rewritten(Enforced, FingerprintId),
    /// No concurrency slot: shed, or would have been.
    Shed(Enforced),
    /// It waited this long for a concurrency slot.
    Queued(Duration),
    /// Its time budget passed: enforced (cancelled, or answered for it), or only observed.
    BudgetPassed(Enforced),
}

/// Counts one [`Event`] on a statement's fingerprint: the one place the pipeline does.
pub(super) fn note(stats: &FingerprintStats, event: Event) {
    let counter = match event {
        Event::Miss(reason) => return stats.record_miss(reason),
        Event::NotStored(reason) => return stats.record_miss_reason(reason),
        Event::Queued(waited) => return stats.record_queued(waited),
        Event::Rewritten(Enforced::Yes, target) => return stats.record_rewrite(target),
        Event::Rewritten(Enforced::Observed, _) => Counter::WouldRewrite,
        Event::Filled => Counter::CacheFill,
        Event::Refresh => Counter::CacheRefresh,
        Event::Coalesced => Counter::CacheCoalesced,
        Event::Rejected(Enforced::Yes) => Counter::Rejected,
        Event::Rejected(Enforced::Observed) => Counter::WouldReject,
        Event::Shed(Enforced::Yes) => Counter::Shed,
        Event::Shed(Enforced::Observed) => Counter::WouldShed,
        Event::BudgetPassed(Enforced::Yes) => Counter::BudgetExceeded,
        Event::BudgetPassed(Enforced::Observed) => Counter::WouldTimeout,
    };
    stats.bump(counter);
}

/// How the cache answered a statement. Stale answers are counted one way: `Revalidating`
/// (stale-while-revalidate, no NOTICE) is a cache hit; `Fallback` (a stale result with a
/// NOTICE, instead of what PostgreSQL said or would have said) is `stale_served`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    Fresh,
    Revalidating,
    Fallback,
}

/// The answer came from this cache entry.
pub(super) struct FromCache<'a> {
    pub entry: &'a Entry,
    pub served: Served,
    /// Bytes of the answer that came from the entry.
    pub body: usize,
}

/// How one statement ended, as its fingerprint's stats record it.
pub(super) struct Outcome<'a> {
    pub elapsed: Duration,
    pub rows: u64,
    pub bytes_sent: u64,
    pub error: Option<[u8; 5]>,
    pub cache: Option<FromCache<'a>>,
}

impl Pipeline {
    /// The one place a statement's outcome reaches the stats: its execution, and how the cache
    /// served it (counted on the entry, for eviction, and on the cache's stale hits too).
    pub(super) fn record(&self, stats: &Arc<FingerprintStats>, outcome: &Outcome<'_>) {
        // A reset or an eviction since the statement started detached its record: record
        // into the live one instead of losing the execution.
        let live;
        let stats = if stats.is_detached() {
            live = self.shared.stats.fingerprint(stats.id(), stats.query());
            &live
        } else {
            stats
        };
        if let Some(from) = &outcome.cache {
            from.entry.count_hit();
            match from.served {
                Served::Fresh => stats.bump(Counter::CacheHit),
                Served::Revalidating => {
                    stats.bump(Counter::CacheHit);
                    self.shared.cache.count_stale_hit();
                }
                Served::Fallback => {
                    stats.bump(Counter::StaleServed);
                    self.shared.cache.count_stale_hit();
                }
            }
            stats.add(Counter::CacheBytesServed, from.body as u64);
        }
        let execution = Execution {
            elapsed: outcome.elapsed,
            rows: outcome.rows,
            bytes_sent: outcome.bytes_sent,
            error_sqlstate: outcome.error,
        };
        stats.record(&execution);
        tracing::trace!(fingerprint = %stats.id(), elapsed_us = execution.elapsed.as_micros() as u64, rows = execution.rows, "statement complete");
    }

    /// PostgreSQL ended the front statement (rows, or an error): its outcome is recorded,
    /// unless its client was answered, and recorded, by pgward already.
    pub(super) fn complete(
        &mut self,
        now: Instant,
        rows: u64,
        error: Option<[u8; 5]>,
        cache: Option<FromCache<'_>>,
    ) {
        let Some(running) = self.expected.pop_completion() else {
            return;
        };
        // Pipelined statements run one after another: each one's latency starts when the
        // one before it completed, not when the client sent it.
        let started = running.received.max(self.expected.last_completion);
        self.expected.last_completion = now;
        if let Some(debit) = &running.debit
            && let Some(db) = &debit.limit.db_time
        {
            // Database time: from when PostgreSQL could start on it (it was sent, and what was
            // ahead of it on this connection had completed), not from its wait for admission.
            let ran = now.saturating_duration_since(started.max(debit.admitted));
            db.settle(debit.reserved, ran, now);
        }
        if let Some(objective) = &running.objective {
            objective.record(now.saturating_duration_since(started), now);
        }
        let Some(stats) = &running.stats else {
            return;
        };
        if running.detached() {
            return;
        }
        let outcome = Outcome {
            elapsed: now.saturating_duration_since(started),
            rows,
            bytes_sent: running.bytes_sent,
            error,
            cache,
        };
        self.record(stats, &outcome);
        if let Some(threshold) = self.shared.slow_statement
            && outcome.elapsed >= threshold
        {
            log_slow(stats, &outcome, running.budget.as_ref());
        }
    }

    /// Nothing is owed any more: the transaction status is final, and the writes of a
    /// finished transaction invalidate the cache entries that read their tables.
    pub(super) fn settled(&mut self) {
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
}

/// The slow statement log line: fingerprint, normalized text (no literals), duration, rule and
/// outcome.
fn log_slow(stats: &FingerprintStats, outcome: &Outcome<'_>, budget: Option<&Budget>) {
    let rule = budget
        .and_then(|b| b.rule().cloned())
        .or_else(|| stats.rule());
    let result = match (outcome.error, budget.is_some_and(Budget::passed)) {
        (_, true) => "budget_exceeded".to_owned(),
        (Some(code), false) => format!("error {}", String::from_utf8_lossy(&code)),
        (None, false) => "ok".to_owned(),
    };
    tracing::warn!(
        target: "pgward::slow",
        fingerprint = %stats.id(),
        query = stats.query(),
        duration_ms = outcome.elapsed.as_secs_f64() * 1000.0,
        rows = outcome.rows,
        rule = rule.as_deref().unwrap_or("-"),
        outcome = %result,
        "slow statement"
    );
}

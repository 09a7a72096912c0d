//! The last phase: a statement's outcome is recorded once, here. Whoever answered it —
//! PostgreSQL, the cache (fresh, while revalidating, or a stale fallback), or pgward itself (a
//! budget's 57014) — ends in one [`Outcome`] that [`Pipeline::record`] writes to the
//! fingerprint's stats: latency, rows, bytes, SQLSTATE, and how the cache served it. Also what
//! happens when nothing is owed any more ([`Pipeline::settled`]) and the slow-statement log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pipeline;
use super::budget::Budget;
use crate::cache::Entry;
use crate::protocol::backend::TransactionStatus;
use crate::stats::{Counter, Execution, FingerprintStats};

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

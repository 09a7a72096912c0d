//! One fingerprint's live statistics: the [`FingerprintStats`] record that
//! sessions cache and record into, the [`Execution`] outcome they report, and
//! the [`Counter`] set of outcome counters (budget, queueing, cache, ...).
//! Plain counts are atomics; timing (histogram, min/max, running variance) and
//! error classes sit behind one small per-fingerprint mutex.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::clock::{now_micros, rfc3339_micros};
use super::snapshot::{FingerprintSnapshot, Outcomes};
use super::window::{Window, WindowStats, Windows};
use crate::cache::MissReason;
use crate::fingerprint::FingerprintId;

/// Largest latency the histogram distinguishes, in microseconds (one hour).
/// Longer executions are recorded as this value.
pub const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits the latency histogram keeps.
pub const HISTOGRAM_SIGFIG: u8 = 2;
/// Upper bounds (inclusive, microseconds) of the latency buckets `/metrics` exports, from
/// 100 µs (a cache hit) to a minute; an overflow bucket follows the last. They are derived from
/// the histogram when a snapshot is taken, so recording a statement costs nothing more.
pub const LATENCY_BUCKETS_MICROS: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
/// Executions per latency bucket (not cumulative): one per [`LATENCY_BUCKETS_MICROS`] bound,
/// then the overflow bucket.
pub type LatencyBuckets = [u64; LATENCY_BUCKETS_MICROS.len() + 1];

/// What one statement execution did, as reported by a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Execution {
    /// Wall time from pgward receiving the statement (or the previous pipelined statement
    /// completing, if later) to its completion.
    pub elapsed: Duration,
    /// Rows returned or affected.
    pub rows: u64,
    /// Bytes sent to the client for this execution.
    pub bytes_sent: u64,
    /// SQLSTATE of the error the execution ended with, if any.
    pub error_sqlstate: Option<[u8; 5]>,
}

/// Outcome counters kept per fingerprint besides calls/rows/errors. To add
/// one: add a variant, list it in [`Counter::ALL`] and give it a name and help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    BudgetExceeded,
    Queued,
    Shed,
    Rejected,
    Rewritten,
    CacheHit,
    CacheMiss,
    StaleServed,
    WouldTimeout,
    WouldShed,
    WouldReject,
    WouldRewrite,
    CacheFill,
    CacheRefresh,
    CacheCoalesced,
    CacheEvicted,
    CacheInvalidated,
    CacheBytesServed,
}

impl Counter {
    /// Number of counters; the length of every per-fingerprint counter array.
    pub const COUNT: usize = 18;
    /// Every counter, in index order.
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::BudgetExceeded,
        Counter::Queued,
        Counter::Shed,
        Counter::Rejected,
        Counter::Rewritten,
        Counter::CacheHit,
        Counter::CacheMiss,
        Counter::StaleServed,
        Counter::WouldTimeout,
        Counter::WouldShed,
        Counter::WouldReject,
        Counter::WouldRewrite,
        Counter::CacheFill,
        Counter::CacheRefresh,
        Counter::CacheCoalesced,
        Counter::CacheEvicted,
        Counter::CacheInvalidated,
        Counter::CacheBytesServed,
    ];

    /// Position in counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// snake_case name used as the JSON field and in metric names.
    pub fn name(self) -> &'static str {
        match self {
            Counter::BudgetExceeded => "budget_exceeded",
            Counter::Queued => "queued",
            Counter::Shed => "shed",
            Counter::Rejected => "rejected",
            Counter::Rewritten => "rewritten",
            Counter::CacheHit => "cache_hits",
            Counter::CacheMiss => "cache_misses",
            Counter::StaleServed => "stale_served",
            Counter::WouldTimeout => "would_timeout",
            Counter::WouldShed => "would_shed",
            Counter::WouldReject => "would_reject",
            Counter::WouldRewrite => "would_rewrite",
            Counter::CacheFill => "cache_fills",
            Counter::CacheRefresh => "cache_refreshes",
            Counter::CacheCoalesced => "cache_coalesced_waits",
            Counter::CacheEvicted => "cache_evictions",
            Counter::CacheInvalidated => "cache_invalidations",
            Counter::CacheBytesServed => "cache_bytes_served",
        }
    }

    /// The name in `/metrics` families (before `_total`): the JSON name, with a unit last.
    pub fn metric_name(self) -> &'static str {
        match self {
            Counter::CacheBytesServed => "cache_served_bytes",
            other => other.name(),
        }
    }

    /// One-line description for metric HELP text.
    pub fn help(self) -> &'static str {
        match self {
            Counter::BudgetExceeded => "Executions that exceeded their time budget",
            Counter::Queued => "Executions that waited in a concurrency queue",
            Counter::Shed => "Executions shed by load shedding",
            Counter::Rejected => "Executions rejected by a rule",
            Counter::Rewritten => "Executions whose query was rewritten",
            Counter::CacheHit => "Executions answered from the result cache",
            Counter::CacheMiss => "Executions that missed the result cache",
            Counter::StaleServed => "Executions answered with a stale cached result",
            Counter::WouldTimeout => "Executions over the budget of an observe-mode rule",
            Counter::WouldShed => {
                "Executions an observe-mode rule's concurrency cap would have shed"
            }
            Counter::WouldReject => "Executions an observe-mode rule would have rejected",
            Counter::WouldRewrite => "Executions an observe-mode rule would have rewritten",
            Counter::CacheFill => "Results stored in the result cache",
            Counter::CacheRefresh => "Executions that refreshed a cache entry past its ttl",
            Counter::CacheCoalesced => {
                "Executions that waited for another session's identical query to fill the cache"
            }
            Counter::CacheEvicted => "Cache entries evicted to stay within cache.max_size",
            Counter::CacheInvalidated => "Cache entries dropped because their tables were written",
            Counter::CacheBytesServed => "Bytes of results answered from the result cache",
        }
    }
}

/// Timing state guarded by the per-fingerprint mutex.
struct Timing {
    /// Latency in microseconds; `None` only if the histogram could not be built.
    histogram: Option<Histogram<u64>>,
    count: u64,
    total_ns: u128,
    min_ns: u64,
    max_ns: u64,
    /// Welford running mean and sum of squared deviations, in nanoseconds.
    mean_ns: f64,
    m2_ns: f64,
    errors: u64,
    /// SQLSTATE class (first two characters) -> count. Few entries: linear scan.
    error_classes: Vec<([u8; 2], u64)>,
    /// Total time spent queued, in nanoseconds.
    queue_ns: u128,
    /// The last five minutes (`window.rs`).
    windows: Windows,
}

impl Timing {
    fn new() -> Timing {
        // Start small and let the histogram grow to the largest value seen
        // (values are clamped to HISTOGRAM_MAX_MICROS), so idle fingerprints
        // stay cheap.
        let histogram = Histogram::new_with_bounds(1, 2, HISTOGRAM_SIGFIG)
            .ok()
            .map(|mut h| {
                h.auto(true);
                h
            });
        Timing {
            histogram,
            count: 0,
            total_ns: 0,
            min_ns: 0,
            max_ns: 0,
            mean_ns: 0.0,
            m2_ns: 0.0,
            errors: 0,
            error_classes: Vec::new(),
            queue_ns: 0,
            windows: Windows::default(),
        }
    }

    fn add(&mut self, elapsed: Duration, error: Option<[u8; 5]>, now_secs: u64) {
        self.windows.record(elapsed, error.is_some(), now_secs);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if self.count == 0 {
            self.min_ns = ns;
            self.max_ns = ns;
        } else {
            self.min_ns = self.min_ns.min(ns);
            self.max_ns = self.max_ns.max(ns);
        }
        self.count += 1;
        self.total_ns += u128::from(ns);
        let x = ns as f64;
        let delta = x - self.mean_ns;
        self.mean_ns += delta / self.count as f64;
        self.m2_ns += delta * (x - self.mean_ns);
        if let Some(h) = self.histogram.as_mut() {
            let micros = (ns / 1_000).clamp(1, HISTOGRAM_MAX_MICROS);
            // Cannot fail: the value is in range and the histogram auto-resizes.
            let _ = h.record(micros);
        }
        if let Some(state) = error {
            self.errors += 1;
            let class = sqlstate_class(state);
            match self.error_classes.iter_mut().find(|(c, _)| *c == class) {
                Some((_, n)) => *n += 1,
                None => self.error_classes.push((class, 1)),
            }
        }
    }

    /// Nearest-rank quantiles in microseconds and the executions per `/metrics` latency
    /// bucket, in one pass over the recorded values (the quantiles alone stopped at the p99's
    /// rank; a snapshot, eviction included, costs about the same). Each recorded value counts at one representative: the highest equivalent
    /// value of its histogram bucket, clamped into the exact [min, max]. The quantiles report
    /// it and the latency buckets count it, so `/stats` and `/metrics` never disagree.
    fn distribution<const N: usize>(&self, qs: [f64; N]) -> ([f64; N], LatencyBuckets) {
        let mut out = [0.0; N];
        let mut buckets = [0; LATENCY_BUCKETS_MICROS.len() + 1];
        let Some(h) = self.histogram.as_ref() else {
            return (out, buckets);
        };
        let n = h.len();
        let ranks = qs.map(|q| ((q * n as f64).ceil() as u64).clamp(1, n.max(1)));
        let min_us = self.min_ns as f64 / 1_000.0;
        let max_us = self.max_ns as f64 / 1_000.0;
        let mut seen = 0u64;
        let mut next = 0;
        for v in h.iter_recorded() {
            let value = h.highest_equivalent(v.value_iterated_to()) as f64;
            let value = value.clamp(min_us.min(max_us), max_us);
            let count = v.count_since_last_iteration();
            seen = seen.saturating_add(count);
            while ranks.get(next).is_some_and(|rank| seen >= *rank) {
                if let Some(slot) = out.get_mut(next) {
                    *slot = value;
                }
                next += 1;
            }
            let bucket = LATENCY_BUCKETS_MICROS.partition_point(|bound| (*bound as f64) < value);
            if let Some(slot) = buckets.get_mut(bucket) {
                *slot = slot.saturating_add(count);
            }
        }
        (out, buckets)
    }
}

/// Maps a SQLSTATE to its two-character class; non-alphanumeric bytes
/// (never produced by PostgreSQL) become `?`.
fn sqlstate_class(state: [u8; 5]) -> [u8; 2] {
    let clean = |b: u8| {
        if b.is_ascii_alphanumeric() {
            b.to_ascii_uppercase()
        } else {
            b'?'
        }
    };
    [clean(state[0]), clean(state[1])]
}

/// Live statistics of one query fingerprint. Sessions get it from
/// `Stats::fingerprint` and may cache the `Arc`; once the record has been
/// evicted or reset away ([`FingerprintStats::is_detached`]), further
/// recordings into it are no longer reported and the session should fetch a
/// fresh handle.
pub struct FingerprintStats {
    id: FingerprintId,
    query: Arc<str>,
    first_seen_micros: u64,
    last_seen_micros: AtomicU64,
    /// Lock-free copy of the call count, read by eviction scans.
    calls: AtomicU64,
    rows: AtomicU64,
    bytes_sent: AtomicU64,
    counters: [AtomicU64; Counter::COUNT],
    miss_reasons: [AtomicU64; MissReason::COUNT],
    rule: Mutex<Option<Arc<str>>>,
    /// Fingerprint of the statement a rule last rewrote this one into.
    rewritten_to: Mutex<Option<FingerprintId>>,
    timing: Mutex<Timing>,
    detached: AtomicBool,
}

/// Longest normalized text a record keeps (the rest is cut at a character boundary and marked
/// with `…`): 5,000 records of megabyte statements would otherwise hold gigabytes for display.
/// PostgreSQL's own `track_activity_query_size` defaults to 1 KiB for the same reason.
pub const MAX_STORED_QUERY: usize = 4096;

/// `query` as a record keeps it: whole up to [`MAX_STORED_QUERY`] bytes, else its head and `…`.
fn stored_text(query: &str) -> std::borrow::Cow<'_, str> {
    if query.len() <= MAX_STORED_QUERY {
        return query.into();
    }
    let mut end = MAX_STORED_QUERY;
    while !query.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &query[..end]).into()
}

impl FingerprintStats {
    pub(crate) fn new(id: FingerprintId, query: &str, now_micros: u64) -> FingerprintStats {
        FingerprintStats {
            id,
            query: Arc::from(stored_text(query)),
            first_seen_micros: now_micros,
            last_seen_micros: AtomicU64::new(now_micros),
            calls: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            miss_reasons: std::array::from_fn(|_| AtomicU64::new(0)),
            rule: Mutex::new(None),
            rewritten_to: Mutex::new(None),
            timing: Mutex::new(Timing::new()),
            detached: AtomicBool::new(false),
        }
    }

    fn timing(&self) -> MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fingerprint this record belongs to.
    pub fn id(&self) -> FingerprintId {
        self.id
    }

    /// The normalized query text.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Records one execution. Every execution counts towards calls and
    /// timing, failed ones too; failures also count in `errors`.
    pub fn record(&self, outcome: &Execution) {
        // One clock read for the window and last_seen.
        let now = now_micros();
        self.timing()
            .add(outcome.elapsed, outcome.error_sqlstate, now / 1_000_000);
        self.calls.fetch_add(1, Relaxed);
        self.rows.fetch_add(outcome.rows, Relaxed);
        self.bytes_sent.fetch_add(outcome.bytes_sent, Relaxed);
        self.last_seen_micros.fetch_max(now, Relaxed);
    }

    /// Increments one outcome counter.
    pub fn bump(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds `n` to one outcome counter.
    pub fn add(&self, counter: Counter, n: u64) {
        self.counters[counter.index()].fetch_add(n, Relaxed);
        self.touch();
    }

    /// Counts a cache miss and why it missed.
    pub fn record_miss(&self, reason: MissReason) {
        self.miss_reasons[reason as usize].fetch_add(1, Relaxed);
        self.bump(Counter::CacheMiss);
    }

    /// Counts why a miss's result could not be stored (too large, an error), without
    /// counting another miss.
    pub fn record_miss_reason(&self, reason: MissReason) {
        self.miss_reasons[reason as usize].fetch_add(1, Relaxed);
        self.touch();
    }

    /// Counts one queued execution and the time it waited.
    pub fn record_queued(&self, waited: Duration) {
        self.timing().queue_ns += waited.as_nanos();
        self.bump(Counter::Queued);
    }

    /// Remembers the name of the last rule that matched this fingerprint.
    pub fn set_rule(&self, name: &str) {
        let mut rule = self.rule.lock().unwrap_or_else(PoisonError::into_inner);
        if rule.as_deref() != Some(name) {
            *rule = Some(Arc::from(name));
        }
    }

    /// The last rule that matched this fingerprint.
    pub fn rule(&self) -> Option<Arc<str>> {
        self.rule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts a rewrite and remembers the fingerprint of the statement sent instead.
    pub fn record_rewrite(&self, target: FingerprintId) {
        self.bump(Counter::Rewritten);
        *self
            .rewritten_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(target);
    }

    /// Current value of one outcome counter.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters[counter.index()].load(Relaxed)
    }

    /// Calls recorded so far (lock-free read).
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    /// Its statistics over the last `window`, ending now.
    pub fn window(&self, window: Window) -> WindowStats {
        let now_secs = now_micros() / 1_000_000;
        self.timing().windows.stats(window, now_secs)
    }

    /// True once this record was evicted or dropped by a reset.
    pub fn is_detached(&self) -> bool {
        self.detached.load(Relaxed)
    }

    pub(crate) fn detach(&self) {
        self.detached.store(true, Relaxed);
    }

    pub(crate) fn last_seen_micros(&self) -> u64 {
        self.last_seen_micros.load(Relaxed)
    }

    fn touch(&self) {
        self.last_seen_micros.fetch_max(now_micros(), Relaxed);
    }

    /// A point-in-time copy; the timing state is read under one lock.
    pub fn snapshot(&self) -> FingerprintSnapshot {
        let (calls, total_ns, min_ns, max_ns, m2_ns, (q, buckets), errors, classes, queue_ns) = {
            let t = self.timing();
            (
                t.count,
                t.total_ns,
                t.min_ns,
                t.max_ns,
                t.m2_ns,
                t.distribution([0.5, 0.95, 0.99]),
                t.errors,
                t.error_classes.clone(),
                t.queue_ns,
            )
        };
        let rule = self
            .rule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            .map(str::to_owned);
        let ms = |ns: f64| ns / 1_000_000.0;
        let stddev_ns = if calls > 0 {
            (m2_ns.max(0.0) / calls as f64).sqrt()
        } else {
            0.0
        };
        let mut errors_by_class = std::collections::BTreeMap::new();
        for (class, n) in classes {
            errors_by_class.insert(String::from_utf8_lossy(&class).into_owned(), n);
        }
        FingerprintSnapshot {
            queryid: self.id.to_string(),
            query: self.query.to_string(),
            calls,
            rows: self.rows.load(Relaxed),
            total_exec_time: ms(total_ns as f64),
            min_exec_time: ms(min_ns as f64),
            max_exec_time: ms(max_ns as f64),
            mean_exec_time: if calls > 0 {
                ms(total_ns as f64) / calls as f64
            } else {
                0.0
            },
            stddev_exec_time: ms(stddev_ns),
            p50_exec_time: q[0] / 1_000.0,
            p95_exec_time: q[1] / 1_000.0,
            p99_exec_time: q[2] / 1_000.0,
            errors,
            errors_by_class,
            bytes_sent: self.bytes_sent.load(Relaxed),
            queue_time: ms(queue_ns as f64),
            latency_buckets: buckets,
            first_seen: rfc3339_micros(self.first_seen_micros),
            last_seen: rfc3339_micros(self.last_seen_micros.load(Relaxed)),
            rule,
            rewritten_to: self
                .rewritten_to
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map(|id| id.to_string()),
            outcomes: Outcomes::from_fn(|c| self.counter(c)),
            cache_miss_reasons: MissReason::ALL
                .iter()
                .filter_map(|r| {
                    let n = self.miss_reasons[*r as usize].load(Relaxed);
                    (n > 0).then_some((r.name(), n))
                })
                .collect(),
            id: self.id,
        }
    }
}

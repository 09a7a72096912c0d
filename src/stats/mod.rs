//! Query statistics: the shared [`Stats`] table of per-fingerprint records
//! (bounded, with least-used eviction), proxy-wide counters, snapshots for the
//! JSON API and the `/metrics` collectors. This file owns the table itself and
//! its settings; the record, snapshot, proxy counter and exposition types live
//! in the submodules and are re-exported here.
//!
//! Hot path: a session calls [`Stats::fingerprint`] once per fingerprint (one
//! DashMap lookup), caches the returned `Arc<FingerprintStats>` and records
//! through it with atomics and one per-fingerprint mutex; no global lock.

mod clock;
mod families;
mod log_scale;
mod process;
mod prometheus;
#[cfg(test)]
mod prometheus_lint;
#[cfg(test)]
mod prometheus_tests;
mod proxy;
mod record;
mod snapshot;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
mod window;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

use crate::cache::{OnRemoved, Removed};
use crate::fingerprint::FingerprintId;

pub use clock::rfc3339;
pub use families::{
    CONTENT_TYPE as METRICS_CONTENT_TYPE, Families, Latency, NO_LABELS, one, render,
};
pub use log_scale::LogScale;
pub use process::ProcessMetrics;
pub use prometheus::QueryMetrics;
pub use proxy::{Gauge, ProxySnapshot, ProxyStats};
pub use record::{
    Counter, Execution, FingerprintStats, HISTOGRAM_MAX_MICROS, HISTOGRAM_SIGFIG,
    LATENCY_BUCKETS_MICROS, LatencyBuckets, MAX_STORED_QUERY,
};
pub use snapshot::{FingerprintSnapshot, Outcomes, Snapshot, SortKey, Totals, UnknownSortKey};
pub use window::{Window, WindowStats};

/// `[stats]` configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsSettings {
    /// Fingerprint and time every statement. Off: only proxy-wide counters are kept (the
    /// per-statement work is skipped entirely; used to measure what stats cost).
    pub enabled: bool,
    /// Most fingerprints tracked at once; least-used ones are evicted beyond
    /// it. 0 is treated as 1.
    pub max_fingerprints: usize,
    /// Fingerprints exported individually on the Prometheus endpoint.
    pub metrics_top: usize,
    /// Reserved: pgward never records literals yet; this will allow it for debugging.
    pub show_literals: bool,
}

impl Default for StatsSettings {
    fn default() -> StatsSettings {
        StatsSettings {
            enabled: true,
            max_fingerprints: 5000,
            metrics_top: 50,
            show_literals: false,
        }
    }
}

/// Statistics shared by all sessions through `Arc<Stats>`.
pub struct Stats {
    settings: StatsSettings,
    fingerprints: DashMap<FingerprintId, Arc<FingerprintStats>>,
    proxy: ProxyStats,
    /// Serializes eviction scans and holds the totals of evicted records.
    evicted: Mutex<Totals>,
    stats_reset_micros: AtomicU64,
}

impl Stats {
    pub fn new(settings: &StatsSettings) -> Stats {
        Stats {
            settings: settings.clone(),
            fingerprints: DashMap::new(),
            proxy: ProxyStats::default(),
            evicted: Mutex::new(Totals::default()),
            stats_reset_micros: AtomicU64::new(clock::now_micros()),
        }
    }

    pub fn settings(&self) -> &StatsSettings {
        &self.settings
    }

    /// Proxy-wide counters, for sessions and listeners to update directly.
    pub fn proxy(&self) -> &ProxyStats {
        &self.proxy
    }

    fn capacity(&self) -> usize {
        self.settings.max_fingerprints.max(1)
    }

    /// The record of `id`, created with `normalized_query` on first sight
    /// (evicting least-used records first if the table is full).
    pub fn fingerprint(&self, id: FingerprintId, normalized_query: &str) -> Arc<FingerprintStats> {
        if let Some(existing) = self.fingerprints.get(&id) {
            return Arc::clone(existing.value());
        }
        if self.fingerprints.len() >= self.capacity() {
            self.evict();
        }
        let now = clock::now_micros();
        let entry = self
            .fingerprints
            .entry(id)
            .or_insert_with(|| Arc::new(FingerprintStats::new(id, normalized_query, now)));
        Arc::clone(entry.value())
    }

    /// Evicts a batch (~5% of capacity, plus any overshoot from concurrent
    /// inserts) of the records with the fewest calls, oldest activity first
    /// among equals. One O(n) scan per batch keeps the cost amortized.
    fn evict(&self) {
        let mut evicted = self.evicted.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = self.capacity();
        let len = self.fingerprints.len();
        if len < capacity {
            return; // another thread made room while we waited
        }
        let batch = (capacity / 20).max(1);
        let target = (len - capacity + batch).min(len);
        let mut candidates: Vec<(u64, u64, FingerprintId)> = self
            .fingerprints
            .iter()
            .map(|e| (e.value().calls(), e.value().last_seen_micros(), *e.key()))
            .collect();
        if target < candidates.len() {
            candidates.select_nth_unstable(target);
            candidates.truncate(target);
        }
        let mut removed = 0u64;
        for (_, _, id) in candidates {
            if let Some((_, record)) = self.fingerprints.remove(&id) {
                record.detach();
                evicted.add(&record.snapshot());
                removed += 1;
            }
        }
        self.proxy.fingerprints_evicted.fetch_add(removed, Relaxed);
    }

    /// The live record of a fingerprint, if it is tracked (never creates one).
    pub fn existing(&self, id: FingerprintId) -> Option<Arc<FingerprintStats>> {
        self.fingerprints.get(&id).map(|r| r.clone())
    }

    /// The result cache's callback for entries it drops on its own: counted on the entry's
    /// fingerprint (`cache_evicted`, `cache_invalidated`) if it is still tracked.
    pub fn on_cache_removed(self: &Arc<Self>) -> OnRemoved {
        let stats = Arc::clone(self);
        Box::new(move |id, removed| {
            if let Some(record) = stats.existing(id) {
                record.bump(match removed {
                    Removed::Evicted => Counter::CacheEvicted,
                    Removed::Invalidated => Counter::CacheInvalidated,
                });
            }
        })
    }

    /// Copies every record (each read once) plus the proxy counters.
    pub fn snapshot(&self) -> Snapshot {
        // Clone the handles first so no map shard stays locked while the
        // per-record mutexes are taken.
        let records: Vec<Arc<FingerprintStats>> = self
            .fingerprints
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        let fingerprints: Vec<FingerprintSnapshot> = records.iter().map(|r| r.snapshot()).collect();
        let mut totals = self
            .evicted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for fp in &fingerprints {
            totals.add(fp);
        }
        let tracked = u64::try_from(fingerprints.len()).unwrap_or(u64::MAX);
        Snapshot {
            taken_at: clock::rfc3339_micros(clock::now_micros()),
            stats_reset: clock::rfc3339_micros(self.stats_reset_micros.load(Relaxed)),
            proxy: self.proxy.snapshot(tracked),
            totals,
            fingerprints,
        }
    }

    /// A copy of one fingerprint's record, if tracked.
    pub fn get(&self, id: FingerprintId) -> Option<FingerprintSnapshot> {
        let record = self.fingerprints.get(&id).map(|e| Arc::clone(e.value()))?;
        Some(record.snapshot())
    }

    /// Number of fingerprints tracked now.
    pub fn tracked(&self) -> usize {
        self.fingerprints.len()
    }

    /// Drops every fingerprint record and zeroes the proxy counters (not the
    /// open-connection gauges), and records the reset time. Handles sessions
    /// still hold become detached.
    pub fn reset(&self) {
        let mut evicted = self.evicted.lock().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<FingerprintId> = self.fingerprints.iter().map(|e| *e.key()).collect();
        for id in ids {
            if let Some((_, record)) = self.fingerprints.remove(&id) {
                record.detach();
            }
        }
        *evicted = Totals::default();
        self.proxy.reset_counters();
        self.stats_reset_micros.store(clock::now_micros(), Relaxed);
    }
}

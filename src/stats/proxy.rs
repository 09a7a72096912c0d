//! Proxy-wide counters and gauges ([`ProxyStats`]: client and upstream
//! connections, queries, errors, fingerprint evictions) and their
//! serializable copy ([`ProxySnapshot`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A value that goes up and down, such as open connections.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }

    /// Increments now and decrements when the returned guard drops.
    pub fn track(&self) -> GaugeGuard<'_> {
        self.inc();
        GaugeGuard(self)
    }
}

/// Holds one unit of a [`Gauge`] (see [`Gauge::track`]).
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Proxy-wide statistics. Counters are plain atomics: `fetch_add(1, Relaxed)`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections open now.
    pub client_connections: Gauge,
    /// Client connections accepted.
    pub client_connections_total: AtomicU64,
    /// Client connections refused by pgward (max_client_connections).
    pub client_connections_rejected: AtomicU64,
    /// Upstream (server) connections open now.
    pub upstream_connections: Gauge,
    /// Upstream connections established.
    pub upstream_connections_total: AtomicU64,
    /// Upstream connection attempts that failed.
    pub upstream_connections_failed: AtomicU64,
    /// Statements executed through the proxy.
    pub queries: AtomicU64,
    /// Statements that ended in an error.
    pub errors: AtomicU64,
    /// Fingerprint records evicted to respect `max_fingerprints`.
    pub fingerprints_evicted: AtomicU64,
}

impl ProxyStats {
    /// Zeroes every counter; the "current" gauges are left alone.
    pub(crate) fn reset_counters(&self) {
        for counter in [
            &self.client_connections_total,
            &self.client_connections_rejected,
            &self.upstream_connections_total,
            &self.upstream_connections_failed,
            &self.queries,
            &self.errors,
            &self.fingerprints_evicted,
        ] {
            counter.store(0, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, fingerprints_tracked: u64) -> ProxySnapshot {
        ProxySnapshot {
            client_connections: self.client_connections.get(),
            client_connections_total: self.client_connections_total.load(Relaxed),
            client_connections_rejected: self.client_connections_rejected.load(Relaxed),
            upstream_connections: self.upstream_connections.get(),
            upstream_connections_total: self.upstream_connections_total.load(Relaxed),
            upstream_connections_failed: self.upstream_connections_failed.load(Relaxed),
            queries: self.queries.load(Relaxed),
            errors: self.errors.load(Relaxed),
            fingerprints_evicted: self.fingerprints_evicted.load(Relaxed),
            fingerprints_tracked,
        }
    }
}

/// Copy of [`ProxyStats`] plus the number of fingerprints tracked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxySnapshot {
    pub client_connections: i64,
    pub client_connections_total: u64,
    pub client_connections_rejected: u64,
    pub upstream_connections: i64,
    pub upstream_connections_total: u64,
    pub upstream_connections_failed: u64,
    pub queries: u64,
    pub errors: u64,
    pub fingerprints_evicted: u64,
    pub fingerprints_tracked: u64,
}
